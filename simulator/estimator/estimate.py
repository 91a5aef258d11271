"""Estimate of one iteration from the schedules' structure, fast enough for a search loop.

It reads the same cost tables as the engine's program (simulator.cost.job) and replaces the event
simulation by the structure of each schedule:
- the study's runtime (simulator.estimator.study): rounds of GPipe, each phase a flow shop of
  stages and links with the rates the phase keeps in flight (simulator.estimator.streaming), dissemination
  barriers between the halves, the sync chains or all-to-alls (simulator.estimator.syncs), the
  optimizer step (beside the sync where it is offloaded) and the last barrier;
- Megatron's 1F1B with blocking exchanges (simulator.estimator.megatron): timed by its own op order
  without an event queue, on a few dozen micro-batches, its periodic steady state extended; then
  its ring all-reduces;
- where workers share a compute unit (simulator.cost.sharing: ranks on one host's cores, or on one
  GPU) no closed form holds, so the engine's whole program is timed as tasks with the units
  shared (simulator.estimator.tasks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from profiler.network.topology import Topology
from scheduler.placement import Placement, Schedule
from scheduler.runtimes import TRAITS
from simulator.cost.job import Job, WorkerCost, check_runtime, stage_costs
from simulator.cost.sharing import Unit
from simulator.estimator.megatron import exchange_times, time_megatron
from simulator.estimator.streaming import streaming_times
from simulator.estimator.study import time_study
from simulator.estimator.tasks import time_tasks
from simulator.lowering.lower import lower
from simulator.prediction import BREAKDOWN_KEYS


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    iteration_s: float
    breakdown: dict[str, float]  # as Prediction.breakdown: mean over workers, sums to iteration_s


def estimate(job: Job, topology: Topology, placement: Placement,
             costs: list[list[WorkerCost]] | None = None) -> Estimate:
    """The iteration, in closed form (or, where ranks share compute, as timed tasks); ``costs``
    replaces the computed per-worker costs (tests)."""
    placement.check_layers(job.model.layers)
    check_runtime(placement)
    M = job.micro_batches(placement)
    costs = costs or stage_costs(job, topology, placement)
    units = _units_used(placement, job.compute_units)
    gpipe = placement.schedule is Schedule.GPIPE
    if units:
        c = (streaming_times(job, topology, placement, costs, "f") | streaming_times(job, topology, placement, costs, "b")
             if gpipe else exchange_times(job, topology, placement, costs))
        timed = time_tasks(job, topology, placement, lower(job, topology, placement, costs=costs), c, units)
        costs = [[replace(cost, forward_s=timed.mean[s, r][0], backward_s=timed.mean[s, r][1])
                  for r, cost in enumerate(row)] for s, row in enumerate(costs)]
        ready, synced, step, iteration = timed.ready, timed.synced, timed.step, timed.iteration_s
    elif gpipe:
        timed = time_study(job, topology, placement, costs)
        ready, synced, step, iteration = timed.ready, timed.synced, timed.step, timed.iteration_s
    else:
        ready, stage_synced = time_megatron(job, topology, placement, costs)
        synced = [[end] * placement.dp for end in stage_synced]
        step = [[(synced[s][r], synced[s][r] + cost.optimizer_s) for r, cost in enumerate(row)]
                for s, row in enumerate(costs)]
        iteration = max(end for row in step for _, end in row)
    return Estimate(iteration_s=iteration, breakdown=_breakdown(placement, costs, ready, synced, step, M, iteration))


def _units_used(placement: Placement, units: tuple[Unit, ...]) -> tuple[list[Unit], dict[int, int]] | None:
    """(the units on which the placement puts more ranks than run at full speed, or two ranks
    whose transfers copy on it; the index of each device's there); None where there are none."""
    used = {d for replicas in placement.devices for group in replicas for d in group}
    crowded: list[Unit] = []
    unit_of: dict[int, int] = {}
    for unit in units:
        mine = [d for d in unit.devices if d in used]
        if len(mine) > unit.capacity or (len(mine) > 1 and unit.copy_s(1.0) > 0):
            unit_of.update((d, len(crowded)) for d in mine)
            crowded.append(unit)
    return (crowded, unit_of) if crowded else None


def _breakdown(placement: Placement, costs: list[list[WorkerCost]], ready: list[list[float]],
               synced: list[list[float]], step: list[list[tuple[float, float]]], M: int,
               iteration: float) -> dict[str, float]:
    """As the engine counts it: a blocking runtime's worker is inside a pipeline exchange
    whenever its schedule is not computing; a worker is in the sync from its own readiness to its
    end of sync (``synced[s][r]``; waiting for its peers included), less what its optimizer step
    does meanwhile (offloaded, beside the sync); the rest is idle."""
    totals = dict.fromkeys(BREAKDOWN_KEYS, 0.0)
    blocking = not TRAITS[placement.runtime].overlap_p2p
    workers = 0
    for s, row in enumerate(costs):
        for r, cost in enumerate(row):
            tp = M * (cost.forward_tp_s + cost.backward_tp_s)
            work = M * (cost.forward_s + cost.backward_s)
            begin, end = step[s][r]
            totals["compute_s"] += work - tp + (end - begin)
            totals["tp_comm_s"] += tp
            totals["pipeline_s"] += max(0.0, ready[r][s] - work) if blocking else 0.0
            overlap = max(0.0, min(end, synced[s][r]) - max(begin, ready[r][s]))
            totals["dp_sync_s"] += max(0.0, synced[s][r] - ready[r][s] - overlap)
            workers += 1
    totals["idle_s"] = workers * iteration - sum(totals.values())
    return {key: value / workers for key, value in totals.items()}
