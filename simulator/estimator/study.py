"""The study's runtime timed from its structure (simulator.lowering.lower describes what it runs): rounds
of GPipe, each a flow shop of stages and links, barriers between its halves, then the sync, the
optimizer step and the last barrier.

A phase of one pipeline is a flow shop with identical jobs (its micro-batches): machines are the
stages and, between them, the links (a link is busy for a transfer's occupancy, and the transfer
reaches the next stage its latency later). Machine j is free from its release r_j (a stage when
its previous work is done, a link when its receiver has posted the round's receives). The last
job leaves machine j at max over j' ≤ j of r_j' + Σ_{i=j'..j} p_i + the latencies between
+ (M − 1) · max_{i=j'..j} p_i: the longest path through the grid of jobs × machines enters at
some machine's release and does all its waiting on the slowest machine after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from profiler.network.topology import Topology
from scheduler.placement import Placement, Sync
from simulator.cost.job import Job, WorkerCost
from simulator.estimator.fluid import fluid_phases_s
from simulator.estimator.streaming import streaming_times
from simulator.estimator.syncs import reduce_broadcast_ends, ring_ends, sharded_phases


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyTimes:
    ready: list[list[float]]  # [r][s]: the worker's last backward and its sends are done (its sync starts)
    synced: list[list[float]]  # [s][r]: its sync is done
    step: list[list[tuple[float, float]]]  # [s][r]: its optimizer step
    iteration_s: float  # every worker has left the last barrier


def last_completions(machines: list[tuple[float, float, float]], jobs: int) -> list[float]:
    """When the last of ``jobs`` identical jobs leaves each machine of a flow shop; machines are
    (processing seconds, latency to the next machine, release)."""
    out = []
    for j in range(len(machines)):
        best, path, peak = float("-inf"), 0.0, 0.0
        for entry in range(j, -1, -1):
            p, latency, release = machines[entry]
            path += p + (latency if entry < j else 0.0)
            peak = max(peak, p)
            best = max(best, release + path + (jobs - 1) * peak)
        out.append(best)
    return out


def barrier_leave(topology: Topology, devices: list[int], entries: list[float]) -> list[float]:
    """gloo's dissemination barrier (simulator.lowering.collectives.barrier): rank i in round d is done when
    its message to i + d has left (once both were in the round) and i − d's has arrived."""
    k, times, d = len(devices), list(entries), 1
    while d < k:
        times = [max(times[i], times[(i + d) % k],
                     max(times[(i - d) % k], times[i]) + topology.route(devices[(i - d) % k], devices[i]).latency_s)
                 for i in range(k)]
        d *= 2
    return times


def _phase(costs: list[list[WorkerCost]], c: dict, placement: Placement, r: int, forward: bool, jobs: int,
           release: list[float]) -> tuple[list[float], list[float]]:
    """One pipeline's phase: (each stage's last compute end, each link's last send leaving, by the
    link's sender stage). ``release[s]``: when stage s (and its receives) may start."""
    P = placement.pp
    stages = list(range(P)) if forward else list(reversed(range(P)))
    machines, where = [], []
    for n, s in enumerate(stages):
        machines.append((costs[s][r].forward_s if forward else costs[s][r].backward_s, 0.0, release[s]))
        where.append(("stage", s))
        if n < P - 1:
            receiver = stages[n + 1]
            occupancy, latency = c["f", s, r] if forward else c["b", receiver, r]
            machines.append((occupancy, latency, release[receiver]))
            where.append(("link", s))
    done = last_completions(machines, jobs)
    ends, sent = [0.0] * P, [0.0] * P
    for (kind, s), t in zip(where, done):
        (ends if kind == "stage" else sent)[s] = t
    return ends, sent


def time_study(job: Job, topology: Topology, placement: Placement, costs: list[list[WorkerCost]]) -> StudyTimes:
    P, D = placement.pp, placement.dp
    c = streaming_times(job, topology, placement, costs, "f") | streaming_times(job, topology, placement, costs, "b")
    ranks = [(s, r) for r in range(D) for s in range(P)]  # global rank r·P + s
    devices = [placement.devices[s][r][0] for s, r in ranks]
    free = [[0.0] * P for _ in range(D)]  # [r][s]: the worker may start the round
    sent = [[0.0] * P for _ in range(D)]  # [r][s]: its last pipeline send has left
    for start, end in job.rounds(placement):
        forward = [_phase(costs, c, placement, r, True, end - start, free[r]) for r in range(D)]
        for r, (_, links) in enumerate(forward):
            sent[r] = [max(a, b) for a, b in zip(sent[r], links)]
        left = barrier_leave(topology, devices, [max(forward[r][0][s], sent[r][s]) for s, r in ranks])
        released = [[0.0] * P for _ in range(D)]
        for (s, r), t in zip(ranks, left):
            released[r][s] = t
        backward = [_phase(costs, c, placement, r, False, end - start, released[r]) for r in range(D)]
        for r, (_, links) in enumerate(backward):
            sent[r] = [max(a, b) for a, b in zip(sent[r], links)]
        # the device synchronises after the half: its sends have left too
        free = [[max(e, x) for e, x in zip(ends, sent[r])] for r, (ends, _) in enumerate(backward)]
    synced = _sync(job, topology, placement, costs, free)
    offloaded = job.offloaded(placement)
    step = [[(free[r][s] if offloaded else synced[s][r],) * 2 for r in range(D)] for s in range(P)]
    step = [[(a, a + costs[s][r].optimizer_s) for r, (a, _) in enumerate(row)] for s, row in enumerate(step)]
    entries = [max(step[s][r][1], synced[s][r]) for s, r in ranks]
    return StudyTimes(ready=free, synced=synced, step=step,
                      iteration_s=max(barrier_leave(topology, devices, entries)))


def _sync(job: Job, topology: Topology, placement: Placement, costs: list[list[WorkerCost]],
          ready: list[list[float]]) -> list[list[float]]:
    """``synced[s][r]``: when the worker's sync (on its own stream, from its readiness) is done."""
    P, D = placement.pp, placement.dp
    if D == 1:
        return [[ready[r][s] for r in range(D)] for s in range(P)]
    sizes = [costs[s][0].params * job.training.element_bytes for s in range(P)]
    if placement.sync is Sync.PS:
        return reduce_broadcast_ends(topology, placement, ready, sizes)
    if placement.sync is Sync.RING:
        return [[end] * D for end in ring_ends(topology, placement, ready, sizes)]
    starts = [min(r[s] for r in ready) for s in range(P)]
    ends = fluid_phases_s(starts, sharded_phases(topology, placement, sizes, ready), topology.capacities)
    return [[end] * D for end in ends]
