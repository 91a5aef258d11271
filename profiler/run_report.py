"""The run report (`run-report/1`): what `executor run` measured of a plan, per rank and per
iteration, as `sim validate` and `sim show` read it. One definition for the writer and the readers.

A report names the plan it ran (its path and ``plan_fingerprint``, the hash of what determines
the run: scheduler.plan.Plan.fingerprint), the placement's config, schedule and sync, the timed
iterations' seconds and losses, and for every rank where it ran (host, cores, threads, device)
and the spans of its last iteration (profiler.trace.Span's category, start and end). Loading
checks every field a reader uses: a number that is not finite, a span that ends before it
starts, a category no runtime records, a rank listed twice are refused with the field named.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler.errors import InputError
from profiler.files import read_json
from profiler.trace import Category, Span

SCHEMA = "run-report/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasuredSpan:
    label: str
    category: Category
    start_s: float
    end_s: float

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "category": self.category.value, "start_s": self.start_s, "end_s": self.end_s}


@dataclass(frozen=True, slots=True, kw_only=True)
class RankRun:
    """One rank (its device of the plan) and where it ran; None where an older report did not say."""

    rank: int
    stage: int | None = None
    replica: int | None = None
    tp_rank: int | None = None
    host: str | None = None
    cpus: int | None = None
    device: str | None = None
    threads: int | None = None
    spans: tuple[MeasuredSpan, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc = {key: getattr(self, key) for key in ("rank", "stage", "replica", "tp_rank", "host", "cpus", "device",
                                                   "threads") if getattr(self, key) is not None}
        return doc | {"spans": [span.to_json() for span in self.spans]}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    plan: str
    plan_fingerprint: str | None
    config: str
    schedule: str
    sync: str
    iteration_s: tuple[float, ...]
    ranks: tuple[RankRun, ...]
    loss: tuple[float, ...] = ()
    emulated_network: bool = False
    warmup: int = 0
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_iteration_s(self) -> float:
        return sum(self.iteration_s) / len(self.iteration_s)

    @property
    def dropout(self) -> float:
        """The dropout the run trained with (older reports ran without and do not say)."""
        return float(self.environment.get("dropout", 0.0))

    def trace_spans(self, tp: int = 1) -> list[Span]:
        """The run's spans as the trace format has them: a stream per rank named by its stage and
        replica (and tensor-parallel rank with ``tp`` > 1), on the rank's device."""
        return [Span(stream=f"s{rank.stage}r{rank.replica}" + (f"t{rank.tp_rank}" if tp > 1 else ""),
                     devices=(rank.rank,), main=True, op_id=i, label=span.label, category=span.category,
                     start_s=span.start_s, end_s=span.end_s)
                for rank in self.ranks for i, span in enumerate(rank.spans)]

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "plan": self.plan, "plan_fingerprint": self.plan_fingerprint, "config": self.config,
                "schedule": self.schedule, "sync": self.sync, "emulated_network": self.emulated_network,
                "warmup": self.warmup, "iteration_s": list(self.iteration_s), "loss": list(self.loss),
                "ranks": [rank.to_json() for rank in self.ranks], "environment": self.environment}

    @classmethod
    def from_json(cls, doc: Any, where: str = "run report") -> "RunReport":
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
            raise InputError(f"{where}: expected a run report ({SCHEMA}), got schema {found!r}")
        if not isinstance(doc.get("iteration_s"), list) or not isinstance(doc.get("ranks"), list):
            raise InputError(f"{where}: malformed run report ('iteration_s' and 'ranks' must be lists)")
        if not doc["iteration_s"] or not doc["ranks"]:
            raise InputError(f"{where}: the run report has no iterations or no ranks")
        seconds = tuple(_seconds(value, f"{where}: iteration_s[{i}]") for i, value in enumerate(doc["iteration_s"]))
        ranks = tuple(_rank(rank, f"{where}: ranks[{r}]") for r, rank in enumerate(doc["ranks"]))
        twice = sorted(n for n, k in Counter(rank.rank for rank in ranks).items() if k > 1)
        if twice:
            raise InputError(f"{where}: rank {', '.join(map(str, twice))} appears more than once")
        environment = doc.get("environment", {})
        if not isinstance(environment, dict) or not _is_number(environment.get("dropout", 0.0)):
            raise InputError(f"{where}: the environment must be an object, its dropout a number")
        fingerprint = doc.get("plan_fingerprint")
        loss = doc.get("loss", [])
        if not isinstance(loss, list) or not all(_is_number(x) for x in loss):
            raise InputError(f"{where}: 'loss' must be a list of numbers")
        return cls(plan=str(doc.get("plan", "")), plan_fingerprint=None if fingerprint is None else str(fingerprint),
                   config=_text(doc, "config", where), schedule=_text(doc, "schedule", where),
                   sync=_text(doc, "sync", where), iteration_s=seconds, ranks=ranks,
                   loss=tuple(float(x) for x in loss), emulated_network=bool(doc.get("emulated_network", False)),
                   warmup=int(doc.get("warmup", 0)) if _is_whole(doc.get("warmup", 0)) else 0,
                   environment=environment)


def load_run_report(path: str | Path) -> RunReport:
    return RunReport.from_json(read_json(path, "run report"), str(path))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(doc: dict, key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise InputError(f"{where}: malformed run report ({key!r} must be a string, got {value!r})")
    return value


def _seconds(value: Any, where: str) -> float:
    if not _is_number(value) or not (math.isfinite(value) and value > 0):
        raise InputError(f"{where} is {value!r}, not a positive number of seconds")
    return float(value)


def _rank(doc: Any, where: str) -> RankRun:
    if not isinstance(doc, dict) or not isinstance(doc.get("spans"), list):
        raise InputError(f"{where}: malformed run report (a rank must be an object with a list of spans)")
    if not _is_whole(doc.get("rank")):
        raise InputError(f"{where}: rank {doc.get('rank')!r} is not a whole number")
    fields = {}
    for key in ("stage", "replica", "tp_rank", "cpus", "threads"):
        if doc.get(key) is not None:
            if not _is_whole(doc[key]) or doc[key] < 0:
                raise InputError(f"{where}: {key} must be a whole number, got {doc[key]!r}")
            fields[key] = doc[key]
    for key in ("host", "device"):
        if doc.get(key) is not None:
            fields[key] = str(doc[key])
    spans = tuple(_span(span, f"{where} spans[{k}]") for k, span in enumerate(doc["spans"]))
    return RankRun(rank=doc["rank"], spans=spans, **fields)


def _span(doc: Any, where: str) -> MeasuredSpan:
    if not isinstance(doc, dict) or not {"category", "start_s", "end_s"} <= doc.keys():
        raise InputError(f"{where}: malformed run report (a span needs category, start_s and end_s)")
    try:
        category = Category(doc["category"])
    except ValueError:
        raise InputError(f"{where}: unknown span category {doc['category']!r}") from None
    start, end = doc["start_s"], doc["end_s"]
    if not (_is_number(start) and _is_number(end) and math.isfinite(start) and math.isfinite(end)):
        raise InputError(f"{where}: start_s {start!r} and end_s {end!r} must be finite seconds")
    if end < start:
        raise InputError(f"{where}: ends at {end!r} s, before it starts at {start!r} s")
    return MeasuredSpan(label=str(doc.get("label", "")), category=category, start_s=float(start), end_s=float(end))
