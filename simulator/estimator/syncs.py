"""The gradient syncs timed from their structure, for the analytic estimator (the engine runs the
steps simulator.lowering.collectives lowers). A transfer occupies its route for bytes / rate and arrives
its route's latency later; a send side is done when its last byte has left, a receive side when
it has arrived. Rates are max-min fair shares of every sync transfer of the same kind in flight
at once (every stage's sync overlaps the others' most of the time)."""

from __future__ import annotations

from profiler.network.topology import Topology, route_rates
from scheduler.placement import Placement
from scheduler.runtimes import NCCL_CHUNK_BYTES
from simulator.estimator.fluid import Phase, fluid_phases_s


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
    """Each stage's sharded sync as two all-to-all phases of flows (simulator.estimator.fluid); a stage's
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


def reduce_broadcast_ends(topology: Topology, placement: Placement, ready: list[list[float]],
                          size_of: list[float]) -> list[list[float]]:
    """``ends[s][r]``: when replica r of stage s is done with NCCL's reduce to the stage's server
    and broadcast from it (chains around the replicas in order: simulator.lowering.collectives). Each
    chain's hops carry the whole buffer as fluid flows (simulator.estimator.fluid) sharing the network with
    every other stage's as they come, the reduce's from when both of a hop's ends are ready and the
    first chunk has crossed the hops before (at the hop's rate alone), the broadcast's once the
    reduce is done; a chain ends when its last hop's flow is delivered."""
    P, D = placement.pp, placement.dp
    phases, starts = [], []
    for s in range(P):
        root = placement.server_of(s)
        chains = [[(root + 1 + i) % D for i in range(D)], [(root + i) % D for i in range(D)]]
        groups: list[Phase] = []
        for n, order in enumerate(chains):
            routes, fills, not_before = [], [], []
            for t in range(placement.tp):
                members = [placement.devices[s][r][t] for r in order]
                fill = 0.0
                for i, (a, b) in enumerate(zip(members, members[1:])):
                    route = topology.route(a, b)
                    routes.append(route)
                    fills.append(fill)
                    not_before.append(max(ready[order[i]][s], ready[order[i + 1]][s]) + fill)
                    fill += route.latency_s + min(NCCL_CHUNK_BYTES, size_of[s]) / topology.lone_rate(route)
            groups.append(Phase(routes=tuple(routes), sizes_bytes=(size_of[s],) * len(routes),
                                not_before_s=tuple(not_before) if n == 0 else (), delays_s=tuple(fills)))
        phases.append(groups)
        starts.append(min(ready[r][s] for r in range(D)))
    ends = [0.0] * P
    for stages in _independent(phases):  # stages whose flows never share a resource run apart
        mine = [phases[s] for s in stages]
        at = [starts[s] for s in stages]
        done = _apart(mine, at, topology) if _disjoint(mine) else fluid_phases_s(at, mine, topology.capacities)
        for s, end in zip(stages, done):
            ends[s] = end
    return [[max(end, ready[r][s]) for r in range(D)] for s, end in enumerate(ends)]


def _independent(phases: list[list[Phase]]) -> list[list[int]]:
    """The stages in groups that share no resource with one another: each group's flows are
    timed alone, the fluid model only where some of them do share."""
    root = list(range(len(phases)))

    def find(a: int) -> int:
        while root[a] != a:
            root[a] = root[root[a]]
            a = root[a]
        return a

    owner: dict[int, int] = {}
    for s, groups in enumerate(phases):
        for phase in groups:
            for route in phase.routes:
                for resource in route.resources:
                    other = owner.setdefault(resource, s)
                    root[find(other)] = find(s)
    out: dict[int, list[int]] = {}
    for s in range(len(phases)):
        out.setdefault(find(s), []).append(s)
    return list(out.values())


def _disjoint(phases: list[list[Phase]]) -> bool:
    """Whether no two flows that may be in flight together share a resource: flows of one phase
    or of two stages may be; a stage's reduce and its broadcast never are."""
    users: dict[int, dict[int, list[int]]] = {}  # resource -> stage -> its phases' flows there
    for s, groups in enumerate(phases):
        for n, phase in enumerate(groups):
            for route in phase.routes:
                for resource in route.resources:
                    users.setdefault(resource, {}).setdefault(s, []).append(n)
    return all(len(stages) == 1 and all(len(set(n)) == len(n) for n in stages.values()) for stages in users.values())


def _apart(phases: list[list[Phase]], starts: list[float], topology: Topology) -> list[float]:
    """What fluid_phases_s gives where every flow has its resources to itself: each at its rate alone."""
    ends = []
    for start, groups in zip(starts, phases):
        now = start
        for phase in groups:
            rates = [topology.lone_rate(route) for route in phase.routes]
            finish = now
            for i, (route, size, rate) in enumerate(zip(phase.routes, phase.sizes_bytes, rates)):
                begin = max(phase.not_before_s[i] if phase.not_before_s else now,
                            now + (phase.delays_s[i] if phase.delays_s else 0.0))
                finish = max(finish, begin + size / rate + route.latency_s)
            now = finish
        ends.append(now)
    return ends
