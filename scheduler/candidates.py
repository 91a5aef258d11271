"""Structured placements of the study's runtime for the time search to start from, and the order
of the pipelines that keeps its sync rings and barriers cheap.

Everything here works on numbers: the twin classes (scheduler.classes), each device's host, the
lone-flow latency and rate between devices. A *grid* is ``grid[stage][replica]``, one device
each; replica r of every stage forms pipeline r, and the global rank of (stage s, replica r) is
r·P + s, the order the runtime's barriers and rings follow.
"""

from __future__ import annotations

import math
from itertools import combinations, permutations

import numpy as np

from scheduler.comm_cost import CommTables, bottleneck_of, chain_pipelines
from scheduler.runtimes import NCCL_CHUNK_BYTES

# Pipeline orders tried outright up to (D − 1)! of them (D = 8: 5040, a few milliseconds each
# batch in numpy); beyond, pairwise swaps from the given order while they help.
EXHAUSTIVE_ORDERS = 5040
SWAP_ROUNDS = 4
SWAP_ALL_MAX = 24  # pipelines: beyond, a round swaps neighbours only
HELD_KARP_MAX = 10  # stage groups: beyond this the exact stage order costs seconds; chained in the given order


def spread(classes: tuple[tuple[int, ...], ...], pp: int) -> list[list[int]] | None:
    """Every stage group takes the same share of every class, so each pipeline can stay inside
    one class (the structure of the study's optima, docs/facts.md §5); None if a class does not split."""
    if any(len(members) % pp for members in classes):
        return None
    return [[d for members in classes for d in members[g::pp]] for g in range(pp)]


def packed(classes: tuple[tuple[int, ...], ...], dp: int) -> list[list[int]] | None:
    """Stage groups filled class after class: data-parallel groups inside a host or region."""
    if any(len(members) % dp for members in classes):
        return None
    flat = [d for members in classes for d in members]
    return [flat[i:i + dp] for i in range(0, len(flat), dp)]


def whole(classes: tuple[tuple[int, ...], ...], pp: int, dp: int) -> list[list[int]] | None:
    """Small classes (a host's GPUs) kept whole, each in the emptiest group, the big ones dealt
    out evenly over the room left: a data-parallel group then reaches its parameter server over
    NVLink from as many peers as a host holds (spot: each stage one p3.8xlarge and 4 single-GPU
    instances). None if no class fits whole or the whole ones do not fit."""
    small = sorted((m for m in classes if len(m) < dp), key=len, reverse=True)
    big = [m for m in classes if len(m) >= dp]
    if not small or not big:
        return None
    groups: list[list[int]] = [[] for _ in range(pp)]
    for members in small:
        emptiest = min(range(pp), key=lambda g: (len(groups[g]), g))
        if len(groups[emptiest]) + len(members) > dp:
            return None
        groups[emptiest] += members
    rest = [d for g in range(max(map(len, big))) for members in big for d in members[g:g + 1]]
    for group in groups:
        take = dp - len(group)
        group += rest[:take]
        del rest[:take]
    return groups


def host_blocks(hosts: tuple[int, ...], pp: int, dp: int) -> list[list[list[int]]]:
    """Grids that give each host of several GPUs a block of a consecutive stages × b pipelines
    (a·b its GPUs), so that a pipeline crosses the host's NIC at most twice and a stage's ring
    passes it once; the hosts' blocks fill the last stages first (ready earliest, their syncs
    sharing a NIC start soonest), or the first, or whole pipelines, and single-GPU hosts the rest.
    Hosts of the most common size only; empty where there are none."""
    on_host: dict[int, list[int]] = {}
    for device, host in enumerate(hosts):
        on_host.setdefault(host, []).append(device)
    sizes = [len(members) for members in on_host.values() if len(members) > 1]
    if not sizes:
        return []
    size = max(set(sizes), key=lambda s: (sizes.count(s), s))
    blocky = [members for members in on_host.values() if len(members) == size]
    others = [d for members in on_host.values() if len(members) != size for d in members]
    slots = len(blocky) * size
    grids = []
    for a in (a for a in range(1, size + 1) if size % a == 0):
        b = size // a
        if pp % a or dp % b:
            continue
        last_rows = [(s, r) for s in range(pp - 1, -1, -1) for r in range(dp)][:slots]
        first_rows = [(s, r) for s in range(pp) for r in range(dp)][:slots]
        first_columns = [(s, r) for r in range(dp) for s in range(pp)][:slots]
        for region in (last_rows, first_rows, first_columns):
            grid = _tile(set(region), blocky, others, a, b, pp, dp)
            if grid is not None and grid not in grids:
                grids.append(grid)
    return grids


def _tile(region: set[tuple[int, int]], blocky: list[list[int]], others: list[int], a: int, b: int,
          pp: int, dp: int) -> list[list[int]] | None:
    """Blocks of a stages × b replicas, aligned, wherever they fit inside ``region``, one host
    each; every other slot from ``others`` in order. None unless every host found a block."""
    grid: list[list[int | None]] = [[None] * dp for _ in range(pp)]
    left = list(blocky)
    for s0 in range(0, pp, a):
        for r0 in range(0, dp, b):
            block = [(s0 + i, r0 + j) for i in range(a) for j in range(b)]
            if left and all(cell in region for cell in block):
                for (s, r), device in zip(block, left.pop(0)):
                    grid[s][r] = device
    if left:
        return None
    rest = iter(others)
    for row in grid:
        for r, device in enumerate(row):
            if device is None:
                row[r] = next(rest)
    return grid  # type: ignore[return-value]


def stage_order(groups: list[list[int]], tables: CommTables, size_bytes: float,
                twin_class: dict[int, int] | None = None) -> list[list[int]]:
    """Stage groups along the pipeline and each replica's device per stage: the group order
    whose slowest boundary occupies a link least (GPipe's period), then the fewest seconds of
    crossing along it (the fill); replicas chained by bottleneck matchings. With ``twin_class``
    the matchings are transports between the groups' class counts (twins pair alike), which
    keeps hundreds of replicas a group cheap."""
    busy = size_bytes / tables.bandwidth_bytes_per_s
    crossing_s = tables.latency_s + busy
    n = len(groups)
    if twin_class is None:
        if n > HELD_KARP_MAX:
            return chain_pipelines(groups, tables, size_bytes)
        pair = lambda i, j, cost: bottleneck_of(cost[np.ix_(groups[i], groups[j])])[0]  # noqa: E731
    else:
        classes = sorted(set(twin_class.values()))
        first = {c: next(d for d in sorted(twin_class) if twin_class[d] == c) for c in classes}
        counts = [np.array([sum(twin_class[d] == c for d in group) for c in classes]) for group in groups]
        pair = lambda i, j, cost: _transport(counts[i], counts[j], _class_cost(cost, classes, first, twin_class))[0]  # noqa: E731
    order = tuple(range(n))
    if n <= HELD_KARP_MAX:
        slowest, crossing = np.zeros((n, n)), np.zeros((n, n))
        for i, j in combinations(range(n), 2):
            slowest[i, j] = slowest[j, i] = pair(i, j, busy)
            crossing[i, j] = crossing[j, i] = pair(i, j, crossing_s)
        order = _lexicographic_path(slowest, crossing)
    ordered = [groups[i] for i in order]
    if twin_class is None:
        return chain_pipelines(ordered, tables, size_bytes)
    return _chain_by_classes(ordered, twin_class, _class_cost(crossing_s, classes, first, twin_class), classes)


def _class_cost(cost: np.ndarray, classes: list[int], first: dict[int, int], twin_class: dict[int, int]) -> np.ndarray:
    """A device cost matrix between classes: any member of one to any other member of the other
    (twins cost alike); within a class, between two of its members (inf for a class of one)."""
    out = np.full((len(classes), len(classes)), np.inf)
    members = {c: [d for d in sorted(twin_class) if twin_class[d] == c] for c in classes}
    for a, ca in enumerate(classes):
        for b, cb in enumerate(classes):
            other = members[cb][1] if ca == cb and len(members[cb]) > 1 else (members[cb][0] if ca != cb else None)
            if other is not None:
                out[a, b] = cost[first[ca], other]
    return out


def _transport(supply: np.ndarray, demand: np.ndarray, cost: np.ndarray) -> tuple[float, np.ndarray]:
    """The bottleneck transport of ``supply`` onto ``demand`` (class counts): the least t such
    that pairs costing at most t carry it all, and such a transport (bisection over the costs,
    a max flow for each)."""
    values = np.unique(cost[np.isfinite(cost)])
    low, high = 0, len(values) - 1
    while low < high:
        mid = (low + high) // 2
        if _max_flow(supply, demand, cost <= values[mid])[0] == supply.sum():
            high = mid
        else:
            low = mid + 1
    return float(values[low]), _max_flow(supply, demand, cost <= values[low])[1]


def _max_flow(supply: np.ndarray, demand: np.ndarray, allowed: np.ndarray) -> tuple[int, np.ndarray]:
    """Augmenting paths on the bipartite transport graph (supply classes to demand classes over
    ``allowed`` pairs): its value and the flow between classes."""
    R = len(supply)
    flow = np.zeros((R, R), dtype=int)
    left, right = supply.astype(int).copy(), demand.astype(int).copy()
    total = 0
    while True:  # BFS from supply classes with stock left, over allowed edges forward, flow backward
        parent: dict[tuple[str, int], tuple[str, int] | None] = {("s", a): None for a in range(R) if left[a] > 0}
        queue, end = list(parent), None
        while queue and end is None:
            side, x = queue.pop(0)
            steps = ([("d", b) for b in range(R) if allowed[x, b]] if side == "s"
                     else [("s", a) for a in range(R) if flow[a, x] > 0])
            for step in steps:
                if step not in parent:
                    parent[step] = (side, x)
                    if step[0] == "d" and right[step[1]] > 0:
                        end = step
                        break
                    queue.append(step)
        if end is None:
            return total, flow
        node = end
        while parent[node] is not None:
            prev = parent[node]
            if prev[0] == "s":
                flow[prev[1], node[1]] += 1
            else:
                flow[node[1], prev[1]] -= 1
            node = prev
        left[node[1]] -= 1
        right[end[1]] -= 1
        total += 1


def _chain_by_classes(ordered: list[list[int]], twin_class: dict[int, int], cost: np.ndarray,
                      classes: list[int]) -> list[list[int]]:
    """chain_pipelines by class counts: each boundary's bottleneck transport, each replica taking
    a device of the next group of a class the transport sends its class to (the cheapest first)."""
    index = {c: i for i, c in enumerate(classes)}
    stages = [list(ordered[0])]
    for nxt in ordered[1:]:
        supply = np.bincount([index[twin_class[d]] for d in stages[-1]], minlength=len(classes))
        demand = np.bincount([index[twin_class[d]] for d in nxt], minlength=len(classes))
        _, flow = _transport(supply, demand, cost)
        free = {b: [d for d in nxt if index[twin_class[d]] == b] for b in range(len(classes))}
        row = []
        for d in stages[-1]:
            a = index[twin_class[d]]
            b = min((b for b in range(len(classes)) if flow[a, b] > 0), key=lambda b: (cost[a, b], b))
            flow[a, b] -= 1
            row.append(free[b].pop(0))
        stages.append(row)
    return stages


def _lexicographic_path(first: np.ndarray, second: np.ndarray) -> tuple[int, ...]:
    """An open path over every node, by Held-Karp on (the largest ``first`` edge, the sum of
    ``second``) compared in that order: the least bottleneck, then the least sum among the paths
    the subsets' best prefixes lead to. Ties: the smallest path."""
    n = first.shape[0]
    if n == 1:
        return (0,)
    best = {(1 << i, i): ((0.0, 0.0), (i,)) for i in range(n)}
    for size in range(2, n + 1):
        for subset in combinations(range(n), size):
            mask = sum(1 << i for i in subset)
            for last in subset:
                prev = mask & ~(1 << last)
                best[mask, last] = min(((max(best[prev, j][0][0], first[j, last]), best[prev, j][0][1] + second[j, last]),
                                        best[prev, j][1] + (last,)) for j in subset if j != last)
    full = (1 << n) - 1
    return min(best[full, last] for last in range(n))[1]


def pipeline_orders(grid: list[list[int]], latency_s: np.ndarray, rate_bytes_per_s: np.ndarray,
                    sizes: list[float], early_s: list[float], barriers: int, twin_class: dict[int, int],
                    keep: int = 3) -> list[list[list[int]]]:
    """The ``keep`` orders of the grid's pipelines (its columns) that make cheapest, by a
    surrogate, the sync rings and barriers that follow the rank order (pipelines whose devices are
    twins stage by stage, ``twin_class``, order alike): the latest stage's ring
    (stage g's two slowest ring edges, its gradient over each, less ``early_s[g]``, how much
    sooner than stage 0 it is ready: NCCL's reduce skips one edge at the server, the broadcast
    the one before it) plus ``barriers`` dissemination barriers with every rank entering at once.
    Every order up to EXHAUSTIVE_ORDERS of them (the first pipeline fixed: rings and barriers
    turn with the ranks), else pairwise swaps from the given order."""
    D = len(grid[0])
    if D < 3:
        return [grid]
    devices = np.asarray(grid)
    kind = [tuple(twin_class[d] for d in devices[:, c]) for c in range(D)]
    blocks = list(dict.fromkeys(kind))  # pipelines alike, as blocks
    if math.factorial(D - 1) <= EXHAUSTIVE_ORDERS:
        distinct = {tuple(kind[c] for c in (0,) + p): (0,) + p for p in permutations(range(1, D))}
        orders = np.array(list(distinct.values()))
    elif math.factorial(len(blocks) - 1) <= EXHAUSTIVE_ORDERS:  # alike pipelines side by side, blocks in every order
        members = [[c for c in range(D) if kind[c] == block] for block in blocks]
        orders = np.array([[c for b in (0,) + p for c in members[b]] for p in permutations(range(1, len(blocks)))])
    else:
        orders = _swapped_orders(devices, latency_s, rate_bytes_per_s, sizes, early_s, barriers)
    cost = _order_cost(devices, orders, latency_s, rate_bytes_per_s, sizes, early_s, barriers)
    chosen = []
    for index in np.argsort(cost, kind="stable"):
        order = list(orders[index])
        candidate = [[row[c] for c in order] for row in grid]
        if candidate not in chosen:
            chosen.append(candidate)
        if len(chosen) == keep:
            break
    return chosen


def _order_cost(devices: np.ndarray, orders: np.ndarray, latency_s: np.ndarray, rate_bytes_per_s: np.ndarray,
                sizes: list[float], early_s: list[float], barriers: int) -> np.ndarray:
    """The surrogate of pipeline_orders for each row of ``orders``; the barriers are timed for
    the orders whose rings alone leave them a chance (in batches, cheapest rings first), the
    others keep their rings' cost (they are not among the best)."""
    P, D = devices.shape
    ring = np.full(len(orders), -np.inf)
    for s in range(P):
        here = devices[s][orders]  # (orders, D)
        there = np.roll(here, -1, axis=1)
        ring = np.maximum(ring, ring_seconds(sizes[s], latency_s[here, there], rate_bytes_per_s[here, there])[0]
                          - early_s[s])
    if not barriers or P * D < 2:
        return ring
    cost, best = ring.copy(), np.inf
    for batch in _batches(np.argsort(ring, kind="stable")):
        if ring[batch[0]] >= best:
            break
        ranks = devices.T[orders[batch]].reshape(len(batch), P * D)  # rank r·P + s on devices[s][order[r]]
        cost[batch] = ring[batch] + barriers * _barrier_s(ranks, latency_s)
        best = min(best, float(cost[batch].min()))
    return cost


def _batches(index: np.ndarray, size: int = 256) -> list[np.ndarray]:
    return [index[i:i + size] for i in range(0, len(index), size)]


def ring_seconds(size_bytes: float, latency_s: np.ndarray, rate_bytes_per_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, server) of NCCL's reduce then broadcast of ``size_bytes`` around rings whose
    edge i joins position i to i + 1 (rows: one ring each), with the server at the position
    that makes it fastest, as the estimator times chains whose hops have their links to
    themselves (simulator.estimator.syncs): the reduce runs from the server's successor round to
    it, the broadcast from it round to its predecessor; a hop starts once the first chunk has
    crossed the hops before it and ends when its last byte arrives; the broadcast starts when
    the reduce has ended."""
    latency_s, rate_bytes_per_s = np.atleast_2d(latency_s), np.atleast_2d(rate_bytes_per_s)
    n, D = latency_s.shape
    if D < 2:  # one replica: nothing to sync
        return np.zeros(n), np.zeros(n, dtype=int)
    with np.errstate(divide="ignore"):
        whole = size_bytes / rate_bytes_per_s + latency_s
        first = min(NCCL_CHUNK_BYTES, size_bytes) / rate_bytes_per_s + latency_s
    best, server = np.full(n, np.inf), np.zeros(n, dtype=int)
    for root in range(D):
        total = np.zeros(n)
        for start in (root + 1, root):  # the reduce's first edge, then the broadcast's
            hops = [(start + k) % D for k in range(D - 1)]
            before = np.concatenate([np.zeros((n, 1)), np.cumsum(first[:, hops[:-1]], axis=1)], axis=1)
            total += (before + whole[:, hops]).max(axis=1)
        better = total < best
        best, server = np.where(better, total, best), np.where(better, root, server)
    return best, server


def _barrier_s(ranks: np.ndarray, latency_s: np.ndarray) -> np.ndarray:
    """The last rank's leaving time of the barrier with every rank entering at 0, for each row
    of ``ranks`` (devices in rank order)."""
    return dissemination(ranks, latency_s, np.zeros(ranks.shape)).max(axis=1)


def dissemination(ranks: np.ndarray, latency_s: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """simulator.estimator.study.barrier_leave for each row of ``ranks`` (devices, or classes
    with ``latency_s`` between classes, in rank order) entering at ``entries`` (−inf: a rank that
    holds nobody up): every rank's leaving time."""
    k = ranks.shape[1]
    t = entries.astype(float)
    index = np.arange(k)
    d = 1
    while d < k:
        src, up = (index - d) % k, (index + d) % k
        t = np.maximum(np.maximum(t, t[:, up]), np.maximum(t[:, src], t) + latency_s[ranks[:, src], ranks])
        d *= 2
    return t


def _swapped_orders(devices: np.ndarray, latency_s: np.ndarray, rate_bytes_per_s: np.ndarray, sizes: list[float],
                    early_s: list[float], barriers: int) -> np.ndarray:
    """Orders met by steepest-descent pairwise swaps of pipelines from the given order (every swap
    of a round costed at once), every order seen kept (the caller ranks them)."""
    D = devices.shape[1]
    order = np.arange(D)
    # Every pair where that is a few hundred orders a round; neighbours only beyond (each order's
    # rings and barrier cost in proportion to the ranks).
    pairs = list(combinations(range(1, D), 2)) if D <= SWAP_ALL_MAX else [(i, i + 1) for i in range(1, D - 1)]
    seen = [order[None]]
    value = _order_cost(devices, order[None], latency_s, rate_bytes_per_s, sizes, early_s, barriers)[0]
    for _ in range(SWAP_ROUNDS):
        trials = np.repeat(order[None], len(pairs), axis=0)
        for row, (i, j) in enumerate(pairs):
            trials[row, [i, j]] = trials[row, [j, i]]
        seen.append(trials)
        cost = _order_cost(devices, trials, latency_s, rate_bytes_per_s, sizes, early_s, barriers)
        if cost.min() >= value:
            break
        best = int(np.argmin(cost))
        order, value = trials[best], float(cost[best])
    return np.concatenate(seen)
