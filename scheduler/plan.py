"""The plan file (`plan/1`): what to run where, and how the plan was made.

It holds the cluster (embedded, or a built-in case by name with a fingerprint of its contents),
the model and training, the placement (degrees, stages with their layer ranges and the devices of
every replica, schedule, sync, runtime), the micro-batch size and count, and its provenance.
Loading checks everything the scheduler can: devices exist and are used once, every pipeline
covers every layer once, the degrees multiply out, the batch splits into micro-batches. Whether
it fits in memory is the simulator's check (`sim predict --plan`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.files import read_json
from profiler.model import ModelSpec, TrainingSpec
from profiler.scenarios import scenario
from scheduler.placement import Placement

PLAN_SCHEMA = "plan/1"


def fingerprint(cluster: Cluster) -> str:
    """sha256 of the cluster's canonical JSON: a plan that names a built-in case notices when
    the case has changed since."""
    text = json.dumps(cluster.to_json(), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    method: str
    objective: str
    seed: int | None = None
    solver_s: float = 0.0
    objective_value: float | None = None
    lower_bound: float | None = None
    predicted_iteration_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "objective": self.objective, "seed": self.seed, "solver_s": self.solver_s,
                "objective_value": self.objective_value, "lower_bound": self.lower_bound,
                "predicted_iteration_s": self.predicted_iteration_s}


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    cluster: Cluster
    case: str | None  # the built-in case the cluster is, if any (then stored by name)
    model: ModelSpec
    training: TrainingSpec
    placement: Placement
    provenance: Provenance

    def __post_init__(self) -> None:
        check_plan(self)

    @property
    def micro_batches(self) -> int:
        return self.training.global_batch // self.placement.dp // self.training.micro_batch

    def fingerprint(self) -> str:
        """sha256 (hex) of the plan's canonical JSON (``to_json``, keys sorted, no spaces): the run
        report carries it, and `sim validate` refuses a report whose fingerprint is another plan's.
        It covers everything the file says: the cluster (embedded, or a built-in case by name and
        the case's own fingerprint), model, training, placement (degrees, stages, devices,
        schedule, sync, runtime), micro-batches and the provenance, so a plan solved again (other
        solver seconds) is another plan even where it places the devices alike. A plan file
        formatted differently (indentation, key order) is the same plan."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        cluster = ({"case": self.case, "fingerprint": fingerprint(self.cluster)} if self.case
                   else self.cluster.to_json())
        return {"schema": PLAN_SCHEMA, "cluster": cluster, "model": self.model.to_json(),
                "training": self.training.to_json(), "placement": self.placement.to_json(),
                "micro_batch": self.training.micro_batch, "micro_batches": self.micro_batches,
                "provenance": self.provenance.to_json()}


def check_plan(plan: Plan) -> None:
    placement, cluster = plan.placement, plan.cluster
    placement.check_layers(plan.model.layers)
    for stage, replicas in enumerate(placement.devices):
        for group in replicas:
            for device in group:
                if not (isinstance(device, int) and 0 <= device < cluster.size):
                    raise InputError(f"stage {stage} names device {device!r}; the cluster has devices "
                                     f"0..{cluster.size - 1}")
    if placement.device_count > cluster.size:
        raise InputError(f"degrees P{placement.pp}T{placement.tp}D{placement.dp} need {placement.device_count} "
                         f"devices, the cluster has {cluster.size}")
    batch, micro = plan.training.global_batch, plan.training.micro_batch
    if batch % (placement.dp * micro):
        raise InputError(f"global batch {batch} does not split into {placement.dp} replicas of micro-batch {micro}")
    if plan.model.heads % placement.tp or plan.model.ffn % placement.tp:
        raise InputError(f"tensor degree {placement.tp} does not divide {plan.model.heads} heads and "
                         f"FFN {plan.model.ffn}")


def plan_from_json(doc: Any, where: str = "plan") -> Plan:
    if not isinstance(doc, dict) or doc.get("schema") != PLAN_SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"{where}: schema is {found!r}, expected {PLAN_SCHEMA!r}")
    try:
        cluster, case = _cluster_of(doc["cluster"], where)
        training = TrainingSpec.from_json(doc["training"])
        plan = Plan(cluster=cluster, case=case, model=ModelSpec.from_json(doc["model"]), training=training,
                    placement=Placement.from_json(doc["placement"]), provenance=Provenance(**doc["provenance"]))
    except KeyError as err:
        raise InputError(f"{where}: missing {err.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise InputError(f"{where}: {err}") from None
    if doc.get("micro_batch", training.micro_batch) != training.micro_batch or \
            doc.get("micro_batches", plan.micro_batches) != plan.micro_batches:
        raise InputError(f"{where}: micro_batch/micro_batches disagree with the training and the data degree "
                         f"({training.micro_batch} × {plan.micro_batches})")
    return plan


def _cluster_of(doc: Any, where: str) -> tuple[Cluster, str | None]:
    if isinstance(doc, dict) and "case" in doc:
        cluster = scenario(str(doc["case"])).build()
        if doc.get("fingerprint") != fingerprint(cluster):
            raise InputError(f"{where}: built-in case {doc['case']!r} has changed since the plan was made "
                             "(fingerprint differs); embed the cluster instead")
        return cluster, doc["case"]
    return Cluster.from_json(doc, where=f"{where} cluster"), None


def load_plan(path: str | Path) -> Plan:
    return plan_from_json(read_json(path, "plan file"), where=str(path))
