"""Megatron's 1F1B with blocking exchanges and its syncs, timed for the analytic estimator.

The schedule is timed by its own op order without an event queue (simulator.estimator.blocking), with each
boundary's exchange at the rate its flows get; the ring all-reduce of each stage's gradients and
the tied embedding's follow on the same stream.
"""

from __future__ import annotations

from profiler.network.topology import Topology
from scheduler.placement import Placement
from scheduler.runtimes import ties_embedding
from simulator.cost.job import Job, WorkerCost
from simulator.estimator.blocking import schedule_ends, transfer_windows
from simulator.estimator.fluid import fluid_finish_s
from simulator.estimator.streaming import pipeline_flows, transfer_times
from simulator.estimator.syncs import ring_ends


def exchange_times(job: Job, topology: Topology, placement: Placement, costs: list[list[WorkerCost]]) -> dict:
    """1F1B's blocking exchanges. One boundary's exchange moves both directions of every
    pipeline at once. Whether other boundaries' transfers overlap it depends on how the schedule
    falls into step, so the schedule is timed (simulator.estimator.blocking) and the overlap read off it:
    on each shared resource a boundary's flows meet, on average over their time, k flows of
    other boundaries, and are timed with the resource cut to their share n / (n + k). Three
    rounds of this fixed point."""
    both = pipeline_flows(placement, "f") + pipeline_flows(placement, "b")
    by_boundary: dict[int, list[tuple]] = {}
    for flow in both:
        by_boundary.setdefault(flow[0][1], []).append(flow)
    c: dict = {}
    for flows in by_boundary.values():
        c |= transfer_times(job, topology, placement, flows)
    probe = min(job.micro_batches(placement), 4 * placement.pp + 4)
    for _ in range(3 if both else 0):
        meets = _meetings(topology, placement, costs, c, probe, both)
        updated: dict = {}
        for boundary, flows in by_boundary.items():
            capacities = list(topology.capacities)
            for resource, (own, others) in meets.get(boundary, {}).items():
                capacities[resource] *= own / (own + others)
            updated |= transfer_times(job, topology, placement, flows, capacities)
        c = updated
    return c


def _meetings(topology: Topology, placement: Placement, costs: list[list[WorkerCost]], c: dict, probe: int,
              flows: list[tuple]) -> dict[int, dict[int, tuple[float, float]]]:
    """boundary -> resource -> (its own flows on the resource at once, the time-average number of
    other boundaries' flows it meets there), from the schedule timed over ``probe`` micro-batches."""
    P = placement.pp
    events: dict[int, list[tuple[float, int, int]]] = {}  # resource -> (time, +1/-1, boundary)
    own: dict[tuple[int, int], int] = {}
    timed: dict[tuple, dict[tuple[str, int], list[tuple[float, float]]]] = {}
    by_replica: dict[int, list[tuple]] = {}
    for flow in flows:
        by_replica.setdefault(flow[0][2], []).append(flow)
    crossing: dict[int, set[int]] = {}  # resource -> boundaries whose flows cross it
    for flow, src, dst in flows:
        for resource in topology.route(src, dst).resources:
            crossing.setdefault(resource, set()).add(flow[1])
    # Neighbouring boundaries never overlap (the stage between them exchanges with one, then the
    # other), so only resources that boundaries two or more apart cross can be contended.
    shared = {resource for resource, boundaries in crossing.items() if max(boundaries) - min(boundaries) > 1}
    if not shared:
        return {}
    for r in range(placement.dp):
        forward = tuple(costs[s][r].forward_s for s in range(P))
        backward = tuple(costs[s][r].backward_s for s in range(P))
        transfer_s = {(d, b): c[d, b, r] for d in ("f", "b") for b in range(P - 1)}
        key = (forward, backward, tuple(transfer_s.items()))
        if key not in timed:  # replicas with equal costs fall into the same step
            by_link: dict[tuple[str, int], list[tuple[float, float]]] = {}
            for (d, b, _), window in transfer_windows(list(forward), list(backward), transfer_s, probe).items():
                by_link.setdefault((d, b), []).append(window)
            timed[key] = by_link
        for (flow, src, dst) in by_replica.get(r, ()):
            resources = topology.route(src, dst).resources
            for resource in resources:
                if resource not in shared:
                    continue
                own[flow[1], resource] = own.get((flow[1], resource), 0) + 1
                events.setdefault(resource, []).extend(
                    mark for start, end in timed[key][flow[:2]] for mark in ((start, 1, flow[1]), (end, -1, flow[1])))
    out: dict[int, dict[int, tuple[float, float]]] = {}
    for resource, marks in events.items():
        for boundary, others in _others_met(marks).items():
            out.setdefault(boundary, {})[resource] = (own[boundary, resource], others)
    return out


def _others_met(marks: list[tuple[float, int, int]]) -> dict[int, float]:
    """Sweep (time, +1/-1, boundary) marks of one resource: for each boundary, how many flows of
    other boundaries its flows share the resource with, averaged over its flows' time there."""
    marks.sort()  # at equal times an end (-1) comes before a start
    count: dict[int, int] = {}
    total, last = 0, marks[0][0]
    mine: dict[int, float] = {}
    met: dict[int, float] = {}
    for time, step, b in marks:
        span = time - last
        for boundary, n in count.items():
            if n:
                mine[boundary] = mine.get(boundary, 0.0) + n * span
                met[boundary] = met.get(boundary, 0.0) + n * (total - n) * span
        count[b] = count.get(b, 0) + step
        total += step
        last = time
    return {boundary: met[boundary] / weight for boundary, weight in mine.items() if weight > 0}


def one_f_one_b_ready(placement: Placement, costs: list[list[WorkerCost]], c: dict, M: int, r: int) -> list[float]:
    P = placement.pp
    transfer_s = tuple(((d, b), c[d, b, r]) for d in ("f", "b") for b in range(P - 1))
    return list(schedule_ends(tuple(costs[s][r].forward_s for s in range(P)),
                              tuple(costs[s][r].backward_s for s in range(P)), transfer_s, M))


def embedding_sync_s(job: Job, topology: Topology, placement: Placement) -> float:
    if not ties_embedding(placement.runtime, job.model) or placement.pp == 1:
        return 0.0
    size = job.model.vocab * job.model.d_model / placement.tp * job.training.element_bytes
    pairs = [(placement.devices[0][r][t], placement.devices[-1][r][t]) for r in range(placement.dp)
             for t in range(placement.tp)]
    routes = [topology.route(a, b) for a, b in pairs] + [topology.route(b, a) for a, b in pairs]
    finish = fluid_finish_s(routes, [size / 2] * len(routes), topology.capacities)
    return 2 * max(finish)  # a ring of two: two steps of half the gradient each way


def time_megatron(job: Job, topology: Topology, placement: Placement,
                  costs: list[list[WorkerCost]]) -> tuple[list[list[float]], list[float]]:
    """(per replica each stage's end of schedule, each stage's end of sync, the tied embedding's included)."""
    M = job.micro_batches(placement)
    c = exchange_times(job, topology, placement, costs)
    ready = [one_f_one_b_ready(placement, costs, c, M, r) for r in range(placement.dp)]
    return ready, sync_ends(job, topology, placement, costs, ready)


def sync_ends(job: Job, topology: Topology, placement: Placement, costs: list[list[WorkerCost]],
              per_replica: list[list[float]], embedding: bool = True) -> list[float]:
    """When each stage's ring all-reduce ends, its workers ready as ``per_replica`` says (without
    ``embedding``, the data-parallel sync alone)."""
    sizes = [costs[s][0].params * job.training.element_bytes for s in range(placement.pp)]
    synced = ring_ends(topology, placement, per_replica, sizes)
    extra = embedding and embedding_sync_s(job, topology, placement)
    if extra:
        synced[0] = synced[-1] = max(synced[0], synced[-1]) + extra
    return synced
