"""Plans already searched, kept on disk by what determines them.

The same row of `sim predict` or the same `sim plan` again answers at once, with the same plan and
proven bound (a search stopped by its clock ends wherever the machine's speed left it; the cache
makes the second answer the first one), and a longer search (`sim plan --time-limit 300`, say)
leaves its better plan and proof for the tables that follow.

- Key: sha256 of the canonical JSON of the cluster, model, training, profiles, degrees and the
  search settings but its effort (method, objective, solver, seed, split), and of the source of
  Tasklet's own packages: a changed estimator or bound never reuses old answers.
- Entry: the placement, its seconds, the best proven bound, and the most effort spent on it
  (the longest time limit, the smallest gap, the most local-search evaluations). A search
  asked for no more effort than an entry's returns the entry (a table row, 1 s at a 1% gap,
  answers from a `sim plan` of 300 s at 0.1%); a longer one starts from the entry's plan and
  keeps the better plan and the larger bound (both hold for the problem).
- Where: ``$TASKLET_CACHE``, else ``$XDG_CACHE_HOME/tasklet``, else ``~/.cache/tasklet``;
  ``TASKLET_CACHE=off`` (or the commands' ``--no-cache``) leaves it out. An entry is written
  whole or not at all (profiler.files.write_atomic); one that cannot be read is searched again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Callable

from profiler.errors import InputError
from profiler.files import write_atomic
from scheduler.methods import SearchSettings
from scheduler.placement import Placement
from scheduler.search import SearchResult

CACHE_SCHEMA = "plan-cache/1"
_PACKAGES = ("profiler", "scheduler", "simulator")
_EFFORT = ("time_limit_s", "gap", "max_evaluations")  # what a search may be given more or less of


@cache
def code_fingerprint() -> str:
    """sha256 over the source of Tasklet's packages (what the estimator and the search run)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in _PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_folder() -> Path | None:
    """Where entries go, or None where the cache is turned off (TASKLET_CACHE=off)."""
    chosen = os.environ.get("TASKLET_CACHE")
    if chosen is not None:
        return None if chosen.strip().lower() in ("off", "0", "") else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tasklet"


def cache_key(job: dict[str, Any], settings: SearchSettings) -> str:
    """``job``: the JSON of what the search reads (cluster, model, training, profiles, degrees)."""
    search = {name: getattr(settings, name) for name in SearchSettings.__dataclass_fields__
              if name not in _EFFORT + ("hints", "deterministic")}
    text = json.dumps({"job": job, "search": search, "code": code_fingerprint()}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    placement: Placement
    value: float
    bound: float | None
    time_limit_s: float  # the most effort the searches of this key have had: the longest limit,
    gap: float  # the smallest gap at which the bound MILP might stop,
    max_evaluations: int  # the largest local-search budget

    def covers(self, settings: SearchSettings) -> bool:
        """Whether the entry had no less effort than ``settings`` ask for."""
        return (self.time_limit_s >= settings.time_limit_s and self.gap <= settings.gap
                and self.max_evaluations >= settings.max_evaluations)

    def to_json(self) -> dict[str, Any]:
        return {"schema": CACHE_SCHEMA, "placement": self.placement.to_json(), "value": self.value,
                "bound": self.bound, "time_limit_s": self.time_limit_s, "gap": self.gap,
                "max_evaluations": self.max_evaluations}


def load(folder: Path, key: str) -> Entry | None:
    """The entry of ``key``, or None where there is none or it cannot be read as one."""
    try:
        doc = json.loads((folder / f"{key}.json").read_text())
        if doc.get("schema") != CACHE_SCHEMA:
            return None
        return Entry(placement=Placement.from_json(doc["placement"]), value=float(doc["value"]),
                     bound=None if doc["bound"] is None else float(doc["bound"]),
                     time_limit_s=float(doc["time_limit_s"]), gap=float(doc["gap"]),
                     max_evaluations=int(doc["max_evaluations"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, InputError):
        return None


def cached_search(folder: Path | None, job: dict[str, Any], settings: SearchSettings,
                  search: Callable[[SearchSettings], SearchResult],
                  progress: Callable[[str], None] | None = None) -> SearchResult:
    """``search(settings)`` through the cache (see the module docstring), keyed by ``job`` and
    the settings (``cache_key``); ``folder`` None: no cache."""
    if folder is None or settings.deterministic or settings.method != "ilp":
        return search(settings)
    key = cache_key(job, settings)
    entry = load(folder, key)
    if entry is not None and entry.covers(settings):
        if progress:
            progress(f"cached: the plan and bound of a {entry.time_limit_s:g} s search ({folder})")
        return SearchResult(placement=entry.placement, value=entry.value, solver_s=0.0, evaluated=0,
                            bound=entry.bound)
    if entry is not None:  # start from the cached plan: the grid of stages × replicas
        grid = tuple(tuple(group[0] for group in replicas) for replicas in entry.placement.devices)
        settings = replace(settings, hints=(grid, *settings.hints))
    result = search(settings)
    if entry is not None:
        bounds = [b for b in (result.bound, entry.bound) if b is not None]
        better = entry.value < result.value
        value = min(entry.value, result.value)
        result = replace(result, placement=entry.placement if better else result.placement, value=value,
                         bound=min(max(bounds), value) if bounds else None)
    if not math.isfinite(result.value):  # nothing the search saw fits: nothing to keep
        return result
    kept = Entry(placement=result.placement, value=result.value, bound=result.bound,
                 time_limit_s=max(settings.time_limit_s, entry.time_limit_s if entry else 0.0),
                 gap=min(settings.gap, entry.gap if entry else settings.gap),
                 max_evaluations=max(settings.max_evaluations, entry.max_evaluations if entry else 0))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / f"{key}.json", json.dumps(kept.to_json(), sort_keys=True))
    except (OSError, InputError) as err:
        if progress:
            progress(f"cache not written ({err})")
    return result
