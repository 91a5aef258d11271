"""The pipeline transfers' rates as the schedules keep them in flight, for the analytic estimator.

A transfer of size bytes at rate R over a route of latency L occupies its route for size / R (its
last byte leaves then) and is delivered L later. Rates are max-min fair shares of the transfers
that a phase keeps in flight at once (every pipeline moves in lockstep).
"""

from __future__ import annotations

from profiler.network.topology import Topology, route_rates
from scheduler.placement import Placement
from simulator.cost.job import Job, WorkerCost

# (occupancy_s, latency_s) of one (direction, boundary, replica) transfer
Timing = tuple[float, float]


def pipeline_flows(placement: Placement, direction: str) -> list[tuple]:
    """((direction, boundary, replica), src, dst) of every tensor-parallel rank's piece."""
    flows = []
    for s in range(placement.pp - 1):
        for r in range(placement.dp):
            for up, down in zip(placement.devices[s][r], placement.devices[s + 1][r]):
                src, dst = (up, down) if direction == "f" else (down, up)
                flows.append(((direction, s, r), src, dst))
    return flows


def transfer_times(job: Job, topology: Topology, placement: Placement, flows: list[tuple],
                   capacities: list[float] | None = None) -> dict[tuple, Timing]:
    """(occupancy, latency) of each (direction, boundary, replica) transfer, all of ``flows`` in
    flight at once; the tensor-parallel ranks' pieces go together and the slowest sets the time."""
    size = job.model.activation_bytes(job.training.micro_batch, job.training.precision) / placement.tp
    routes = [topology.route(src, dst) for _, src, dst in flows]
    rates = route_rates(routes, capacities or topology.capacities)
    out: dict = {}
    for (key, _, _), route, rate in zip(flows, routes, rates):
        out[key] = _slower(out.get(key), (size / rate, route.latency_s))
    return out


def _slower(a: Timing | None, b: Timing) -> Timing:
    return b if a is None or sum(b) > sum(a) else a


def streaming_times(job: Job, topology: Topology, placement: Placement, costs: list[list[WorkerCost]],
                    direction: str) -> dict[tuple, Timing]:
    """GPipe's transfers of one phase. Every pipeline streams one transfer per boundary per
    period (its slowest stage or link occupancy); on a shared resource the other flows take their
    time-average bandwidth, one activation per period each, and never leave a flow less than the
    fair share it would get were they all in flight (a mean-field fixed point, three rounds)."""
    flows = pipeline_flows(placement, direction)
    size = job.model.activation_bytes(job.training.micro_batch, job.training.precision) / placement.tp
    routes = [topology.route(src, dst) for _, src, dst in flows]
    c = transfer_times(job, topology, placement, flows)
    compute = [max(getattr(costs[s][r], "forward_s" if direction == "f" else "backward_s")
                   for s in range(placement.pp)) for r in range(placement.dp)]
    for _ in range(3):
        period = [max(compute[r], max((t[0] for (d, _, rr), t in c.items() if rr == r), default=0.0))
                  for r in range(placement.dp)]
        load = [0.0] * len(topology.capacities)
        users = [0] * len(topology.capacities)
        for (key, _, _), route in zip(flows, routes):
            for resource in route.resources:
                load[resource] += size / period[key[2]]
                users[resource] += 1
        updated: dict = {}
        for (key, src, dst), route in zip(flows, routes):
            mine = size / period[key[2]]
            # A flow alone gets its tightest resource (what is left of it) or its own cap.
            rate = route.flow_cap_bytes_per_s
            for resource in route.resources:
                full = topology.capacities[resource]
                rate = min(rate, max(full - (load[resource] - mine), full / users[resource]))
            updated[key] = _slower(updated.get(key), (size / rate, route.latency_s))
        c = updated
    return c
