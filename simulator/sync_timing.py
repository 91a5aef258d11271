"""The gradient syncs timed from their structure, for the analytic estimator (the engine runs the
steps simulator.collectives lowers). A transfer occupies its route for bytes / rate and arrives
its route's latency later; a send side is done when its last byte has left, a receive side when
it has arrived. Rates are max-min fair shares of every sync transfer of the same kind in flight
at once (every stage's sync overlaps the others' most of the time)."""

from __future__ import annotations

from scheduler.placement import Placement
from simulator.collectives import NCCL_CHUNK_BYTES
from simulator.fluid import Phase
from simulator.topology import Topology, route_rates


def ring_ends(topology: Topology, placement: Placement, ready: list[list[float]], size_of: list[float]) -> list[float]:
    """When each stage's ring all-reduces end (``ready[r][s]``: when replica r of stage s starts).
    Member i's step j sends to i + 1 once both have finished step j − 1, and is done when its send
    has left and the previous member's has arrived."""
    D = placement.dp
    edges = [(s, t, i) for s in range(placement.pp) for t in range(placement.tp) for i in range(D)]
    pairs = [(placement.devices[s][i][t], placement.devices[s][(i + 1) % D][t]) for s, t, i in edges]
    routes = [topology.route(a, b) for a, b in pairs] if D > 1 else []
    rates = route_rates(routes, topology.capacities) if routes else []
    edge = {key: (size_of[key[0]] / D / rate, route.latency_s) for key, route, rate in zip(edges, routes, rates)}
    ends = []
    for s in range(placement.pp):
        end = max(ready[r][s] for r in range(D))
        for t in range(placement.tp):
            done = [ready[r][s] for r in range(D)]
            for _ in range(2 * (D - 1) if D > 1 else 0):
                start = [max(done[i], done[(i + 1) % D]) for i in range(D)]
                left = [start[i] + edge[s, t, i][0] for i in range(D)]
                done = [max(left[i], left[i - 1] + edge[s, t, (i - 1) % D][1]) for i in range(D)]
            end = max(end, max(done))
        ends.append(end)
    return ends


def sharded_phases(topology: Topology, placement: Placement, size_of: list[float],
                   ready: list[list[float]]) -> list[list[Phase]]:
    """Each stage's sharded sync as two all-to-all phases of flows (simulator.fluid); a stage's
    tensor-parallel ranks sync in separate groups side by side, so their flows share each phase.
    A first-phase flow starts once both its ends are ready."""
    D, out = placement.dp, []
    for s in range(placement.pp):
        if D == 1:
            out.append([])
            continue
        members = [[(placement.devices[s][r][t], r) for r in range(D)] for t in range(placement.tp)]
        a2a = [(m[i], m[j]) for m in members for i in range(D) for j in range(D) if i != j]
        first = tuple(max(ready[a[1]][s], ready[b[1]][s]) for a, b in a2a)
        routes = tuple(topology.route(a[0], b[0]) for a, b in a2a)
        out.append([Phase(routes=routes, sizes_bytes=(size_of[s] / D,) * len(a2a), not_before_s=first),
                    Phase(routes=routes, sizes_bytes=(size_of[s] / D,) * len(a2a))])
    return out


def _pieces(size: float) -> tuple[float, float, float]:
    """(first chunk, body, last chunk) of a hop; a small buffer goes whole as its 'body'."""
    if size > 2 * NCCL_CHUNK_BYTES:
        return NCCL_CHUNK_BYTES, size - 2 * NCCL_CHUNK_BYTES, NCCL_CHUNK_BYTES
    return 0.0, size, 0.0


def chain_ends(size: float, hops: list[tuple[float, float]], starts: list[float]) -> list[float]:
    """A pipelined chain (simulator.collectives.chain) of len(starts) members, hop i at
    (rate, latency) ``hops[i]``; member i starts at ``starts[i]``. When each member is done: the
    last send of its hop has left, the last member's last chunk has arrived."""
    first, body, last = _pieces(size)
    head_arrival = tail_arrival = None
    ends = []
    for i, (rate, latency) in enumerate(hops):
        go = max(starts[i], starts[i + 1]) if head_arrival is None else max(starts[i], starts[i + 1], head_arrival)
        head_left = go + first / rate
        head_arrival = head_left + latency if first else None
        body_left = head_left + body / rate
        tail_go = body_left if tail_arrival is None else max(body_left, tail_arrival)
        tail_left = tail_go + last / rate
        tail_arrival = tail_left + latency
        ends.append(tail_left)
        if head_arrival is None:  # a buffer that went whole: the next hop starts when it arrives
            head_arrival = tail_arrival
    ends.append(tail_arrival if hops else starts[0])
    return ends


def reduce_broadcast_ends(topology: Topology, placement: Placement, ready: list[list[float]],
                          size_of: list[float]) -> list[list[float]]:
    """``ends[s][r]``: when replica r of stage s is done with NCCL's reduce to the stage's server
    and broadcast from it (chains around the replicas in order: simulator.collectives)."""
    P, D = placement.pp, placement.dp
    orders, hop_routes = {}, []
    for s in range(P):
        root = placement.server_of(s)
        around = [(root + 1 + i) % D for i in range(D)]
        out = [(root + i) % D for i in range(D)]
        for t in range(placement.tp):
            for phase, order in (("reduce", around), ("broadcast", out)):
                members = [placement.devices[s][r][t] for r in order]
                orders[s, t, phase] = order
                hop_routes += [((s, t, phase, i), topology.route(a, b)) for i, (a, b) in enumerate(zip(members, members[1:]))]
    hop: dict = {}
    for phase in ("reduce", "broadcast"):
        keys = [(key, route) for key, route in hop_routes if key[2] == phase]
        rates = route_rates([route for _, route in keys], topology.capacities) if keys else []
        hop |= {key: (rate, route.latency_s) for (key, route), rate in zip(keys, rates)}
    ends = [[ready[r][s] for r in range(D)] for s in range(P)]
    for s in range(P):
        for t in range(placement.tp):
            done = [ready[r][s] for r in range(D)]
            for phase in ("reduce", "broadcast"):
                order = orders[s, t, phase]
                timed = chain_ends(size_of[s], [hop[s, t, phase, i] for i in range(D - 1)], [done[r] for r in order])
                for position, r in enumerate(order):
                    done[r] = timed[position]
            ends[s] = [max(e, d) for e, d in zip(ends[s], done)]
    return ends
