"""What `profiler compute` measured (schema ``profile/1``): one device kind's compute for one model
shape, as plain data the simulator predicts from instead of the datasheet model.

A profile holds, per (tensor-parallel degree, micro-batch), the median and the spread of one
layer shard's forward, backward and recompute, the embedding's and the output head's forward and
backward, and the optimizer step's seconds per parameter byte, with what it was measured on. A
shape the profile lacks is interpolated between the two measured micro-batches around it at the
same tensor degree (a layer's work is affine in its tokens there); anything else is an error that
says what to measure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.errors import InputError
from profiler.files import read_json
from profiler.model import OPTIONS, PRECISIONS, SHAPE, ModelSpec

SCHEMA = "profile/1"
SHAPE_KEYS = SHAPE  # every profile's shape gives these, and the model's options not at their defaults


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """Repeats of one measurement: their median, and their spread (75th − 25th percentile)."""

    median_s: float
    spread_s: float

    def __post_init__(self) -> None:
        if not (self.median_s >= 0 and self.spread_s >= 0):
            raise InputError(f"timing median {self.median_s!r} s and spread {self.spread_s!r} s must be ≥ 0")

    def to_json(self) -> dict[str, float]:
        return {"median_s": self.median_s, "spread_s": self.spread_s}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> "Timing":
        median_s, spread_s = _number(doc, "median_s", where), _number(doc, "spread_s", where)
        try:
            return cls(median_s=median_s, spread_s=spread_s)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """One part (a layer shard, the embedding or the head) at one (tp, micro-batch)."""

    tp: int
    micro_batch: int
    forward: Timing
    backward: Timing
    recompute: Timing | None = None  # layers only: the forward again, with autograd, before backward
    peak_memory_bytes: int = 0  # held beyond the weights: gradients and saved activations (profiler.measure)

    def to_json(self) -> dict[str, Any]:
        doc = {"tp": self.tp, "micro_batch": self.micro_batch, "forward": self.forward.to_json(),
               "backward": self.backward.to_json()}
        if self.recompute is not None:
            doc["recompute"] = self.recompute.to_json()
        return doc | {"peak_memory_bytes": self.peak_memory_bytes}

    @classmethod
    def from_json(cls, doc: Any, where: str, layer: bool = False) -> "Measured":
        if not isinstance(doc, dict):
            raise InputError(f"{where}: expected an object")
        if layer and "recompute" not in doc:
            raise InputError(f"{where}: a layer's timings need 'recompute'")
        tp, micro_batch = _positive_int(doc, "tp", where), _positive_int(doc, "micro_batch", where)
        at = f"{where} (tp {tp}, micro-batch {micro_batch})"
        return cls(tp=tp, micro_batch=micro_batch,
                   forward=Timing.from_json(doc.get("forward"), f"{at} forward"),
                   backward=Timing.from_json(doc.get("backward"), f"{at} backward"),
                   recompute=Timing.from_json(doc["recompute"], f"{at} recompute") if "recompute" in doc else None,
                   peak_memory_bytes=_count(doc, "peak_memory_bytes", at))


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    device_kind: str  # the kind clusters name (a GPU kind such as "H100-80GB", or "CPU")
    device_name: str  # as torch reports it
    memory_bytes: float  # the device's memory (a CPU's: the machine's RAM)
    torch_version: str
    threads: int  # torch's intra-op threads (CPU); 0 where not set
    dtype: str
    host: str
    date: str  # ISO 8601, when it was measured
    warmup: int
    repeats: int
    shape: dict[str, Any]  # d_model, heads, ffn, seq_len, vocab; kv_heads, activation, position where not GPT's
    layers: tuple[Measured, ...]
    embedding: tuple[Measured, ...]
    head: tuple[Measured, ...]
    optimizer_s_per_param_byte: float
    dropout: float = 0.1  # the modules' dropout probability (Megatron's 0.1; the executor runs 0)

    def __post_init__(self) -> None:
        if self.dtype not in PRECISIONS:
            raise InputError(f"profile dtype must be one of {', '.join(PRECISIONS)}, got {self.dtype!r}")
        options = set(self.shape) - set(SHAPE_KEYS)
        if not set(SHAPE_KEYS) <= set(self.shape) or not options <= set(OPTIONS) - {"tied_embedding"}:
            raise InputError(f"profile shape must give {', '.join(SHAPE_KEYS)} and optionally kv_heads, activation, "
                             f"position, got {sorted(self.shape)}")
        ModelSpec(name="profile shape", layers=1, **self.shape)  # its values, checked as a model's
        if not self.layers:
            raise InputError("profile has no layer timings")
        if not self.optimizer_s_per_param_byte > 0 or not self.memory_bytes > 0:
            raise InputError("profile optimizer_s_per_param_byte and memory_bytes must be positive")
        if not 0 <= self.dropout < 1:
            raise InputError(f"profile dropout must be in [0, 1), got {self.dropout}")

    def matches(self, model: ModelSpec) -> bool:
        return ModelSpec(name="profile shape", layers=1, **self.shape).shape() == model.shape()

    def check_covers(self, model: ModelSpec, precision: str) -> None:
        """An error naming what differs when this profile cannot stand for ``model`` in ``precision``."""
        wanted = model.shape()
        if precision != self.dtype:
            raise InputError(f"profile of {self.device_kind} was measured in {self.dtype}, the job trains in "
                             f"{precision}: measure it with `{self.command(wanted, precision)}`")
        if not self.matches(model):
            raise InputError(f"profile of {self.device_kind} was measured for {_shape(self.shape)}, the job's model "
                             f"is {_shape(wanted)}: measure it with `{self.command(wanted, precision)}`, or give "
                             "--model a model file (model/1) of the profile's shape")

    def layer(self, tp: int, micro_batch: int) -> tuple[float, float, float]:
        """(forward, backward, recompute) seconds of one layer shard, one micro-batch."""
        part = self._at("layers", tp, micro_batch)
        return part[0], part[1], part[2]

    def embedding_times(self, tp: int, micro_batch: int) -> tuple[float, float]:
        return self._at("embedding", tp, micro_batch)[:2]

    def head_times(self, tp: int, micro_batch: int) -> tuple[float, float]:
        return self._at("head", tp, micro_batch)[:2]

    def _at(self, part: str, tp: int, micro_batch: int) -> tuple[float, float, float]:
        rows = [m for m in getattr(self, part) if m.tp == tp]
        exact = [m for m in rows if m.micro_batch == micro_batch]
        if exact:
            return _medians(exact[0])
        below = max((m for m in rows if m.micro_batch < micro_batch), key=lambda m: m.micro_batch, default=None)
        above = min((m for m in rows if m.micro_batch > micro_batch), key=lambda m: m.micro_batch, default=None)
        if below is None or above is None:
            measured = sorted({(m.tp, m.micro_batch) for m in getattr(self, part)})
            tps = sorted({t for t, _ in measured} | {tp})
            micro_batches = sorted({b for _, b in measured} | {micro_batch})
            raise InputError(
                f"profile of {self.device_kind} has no {part} timing for tp {tp}, micro-batch {micro_batch} and "
                f"none to interpolate from (measured tp × micro-batch: "
                f"{', '.join(f'{t}×{b}' for t, b in measured)}): measure it again with "
                f"`{self.command()} --tp {' '.join(map(str, tps))} --micro-batch {' '.join(map(str, micro_batches))}`")
        share = (micro_batch - below.micro_batch) / (above.micro_batch - below.micro_batch)
        return tuple(lo + share * (hi - lo) for lo, hi in zip(_medians(below), _medians(above)))

    def command(self, shape: dict[str, int] | None = None, dtype: str | None = None) -> str:
        """The `profiler compute` command that measures this kind for ``shape`` in ``dtype``."""
        shape, device = shape or self.shape, "cpu" if self.device_kind == "CPU" else "cuda"
        flags = " ".join(f"--{key.replace('_len', '').replace('_', '-')} {value}" for key, value in shape.items())
        extra = f" --dropout {self.dropout:g}" if self.dropout != 0.1 else ""
        return f"profiler compute --device {device} --kind {self.device_kind} {flags} --dtype {dtype or self.dtype}{extra}"

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "device_kind": self.device_kind, "device_name": self.device_name,
                "memory_bytes": self.memory_bytes, "torch_version": self.torch_version, "threads": self.threads,
                "dtype": self.dtype, "host": self.host, "date": self.date, "warmup": self.warmup,
                "repeats": self.repeats, "dropout": self.dropout, "shape": dict(self.shape),
                "layers": [m.to_json() for m in self.layers], "embedding": [m.to_json() for m in self.embedding],
                "head": [m.to_json() for m in self.head],
                "optimizer_s_per_param_byte": self.optimizer_s_per_param_byte}

    @classmethod
    def from_json(cls, doc: Any, where: str = "profile") -> "Profile":
        if not isinstance(doc, dict):
            raise InputError(f"{where}: expected a JSON object")
        if doc.get("schema") != SCHEMA:
            raise InputError(f"{where}: schema must be {SCHEMA!r}, got {doc.get('schema')!r}")
        shape = doc.get("shape")
        if not isinstance(shape, dict):
            raise InputError(f"{where}: 'shape' must be an object")
        parts = {}
        for part in ("layers", "embedding", "head"):
            rows = doc.get(part)
            if not isinstance(rows, list):
                raise InputError(f"{where}: {part!r} must be a list")
            parts[part] = tuple(Measured.from_json(row, f"{where} {part}[{i}]", layer=part == "layers")
                                for i, row in enumerate(rows))
        fields = dict(device_kind=_text(doc, "device_kind", where), device_name=_text(doc, "device_name", where),
                      memory_bytes=_number(doc, "memory_bytes", where), torch_version=_text(doc, "torch_version", where),
                      threads=_count(doc, "threads", where), dtype=_text(doc, "dtype", where),
                      host=_text(doc, "host", where), date=_text(doc, "date", where),
                      warmup=_count(doc, "warmup", where), repeats=_positive_int(doc, "repeats", where),
                      shape={key: _positive_int(shape, key, f"{where} shape") for key in SHAPE_KEYS}
                      | {key: shape[key] for key in shape if key not in SHAPE_KEYS}, **parts,
                      optimizer_s_per_param_byte=_number(doc, "optimizer_s_per_param_byte", where),
                      # Profiles from before the field were all measured with the modules' 0.1.
                      dropout=_number(doc, "dropout", where) if "dropout" in doc else 0.1)
        try:
            return cls(**fields)
        except InputError as err:  # what __post_init__ found: name the file
            raise InputError(f"{where}: {err}") from None


def load_profile(path: str | Path) -> Profile:
    """Read a profile file; a missing, malformed or inconsistent one is an InputError naming the file."""
    return Profile.from_json(read_json(path, "profile"), where=str(path))


def _medians(m: Measured) -> tuple[float, float, float]:
    return m.forward.median_s, m.backward.median_s, m.recompute.median_s if m.recompute else 0.0


def _shape(shape: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in shape.items())


def _number(doc: Any, key: str, where: str) -> float:
    value = doc.get(key) if isinstance(doc, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _count(doc: Any, key: str, where: str) -> int:
    """A whole number ≥ 0 (threads, warm-up runs, bytes); a float that is whole is taken."""
    value = _number(doc, key, where)
    if value < 0 or not value.is_integer():
        raise InputError(f"{where}: {key!r} must be a whole number ≥ 0, got {doc[key]!r}")
    return int(value)


def _positive_int(doc: Any, key: str, where: str) -> int:
    value = doc.get(key) if isinstance(doc, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{where}: {key!r} must be a positive integer, got {value!r}")
    return value


def _text(doc: Any, key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value
