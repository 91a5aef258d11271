"""What the simulator predicts for one placement, and the study's table of systems."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PREDICTION_SCHEMA = "prediction/1"
TABLE_SCHEMA = "prediction-table/1"
BREAKDOWN_KEYS = ("compute_s", "tp_comm_s", "pipeline_s", "dp_sync_s", "idle_s")


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """One iteration of one placement. ``breakdown`` splits each worker's iteration into
    compute, blocking tensor-parallel all-reduces, time blocked in pipeline transfers, gradient
    sync, and idle time (bubbles and waits), averaged over workers; it sums to iteration_s."""

    config: str
    engine: str  # "simpy" or "analytic"
    iteration_s: float
    breakdown: dict[str, float]
    peak_memory_bytes: tuple[float, ...]  # per device, in device order; 0 for unused devices
    operations: int = 0  # modelled operations (SimPy engine)

    def to_json(self) -> dict[str, Any]:
        return {"schema": PREDICTION_SCHEMA, "config": self.config, "engine": self.engine,
                "iteration_s": self.iteration_s, "breakdown": dict(self.breakdown),
                "peak_memory_bytes": list(self.peak_memory_bytes), "operations": self.operations}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Prediction":
        return cls(config=doc["config"], engine=doc["engine"], iteration_s=doc["iteration_s"],
                   breakdown=dict(doc["breakdown"]), peak_memory_bytes=tuple(doc["peak_memory_bytes"]),
                   operations=doc.get("operations", 0))


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemResult:
    iteration_s: float | None  # None: does not fit in memory
    config: str | None = None
    gap: float | None = None  # a scheduled plan: (found - proven bound) / found, as the planner saw it
    # the placement the value is of (Megatron-Optimal's configuration, the scheduled plan); not in JSON
    placement: Any = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"iteration_s": self.iteration_s}
        if self.config is not None:
            doc["config"] = self.config
        if self.gap is not None:
            doc["gap"] = self.gap
        return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class TableRow:
    layers: int
    batch: int
    systems: dict[str, SystemResult]
    megatron_configs: dict[str, float | None]

    def to_json(self) -> dict[str, Any]:
        return {"layers": self.layers, "batch": self.batch,
                "systems": {k: v.to_json() for k, v in self.systems.items()},
                "megatron_configs": dict(self.megatron_configs)}


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictionTable:
    case: str
    engine: str
    rows: tuple[TableRow, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"schema": TABLE_SCHEMA, "case": self.case, "engine": self.engine,
                "rows": [row.to_json() for row in self.rows]}
