"""The cyclic-move local search of the study's evolutionary scheduler (docs/facts.md §5), on numbers only.

A partition holds D_PP groups of D_DP devices, group k a bitmask of device ids. A move is a cycle
of 2 or 3 distinct groups g1→g2(→g3)→g1 that moves one unlocked device out of each group into the
next one, so every group keeps D_DP devices. Each group's unlocked devices are ranked worst first
by a badness (below; ties by device id). Candidates, in tie-break order: every group pair (lower
indices first) with the _WIDTH worst devices of each side; then every group triple, both ways round,
with the worst device of each. A pass repeatedly applies the candidate of largest gain (even if
≤ 0; 3-cycles are only enumerated when no pair gains) and locks the moved devices, until no
candidate is left, N/2 moves are made, or _PATIENCE moves in a row bring no new best value; it
then keeps the prefix of its moves with the lowest value and undoes the rest. Passes repeat while
a pass lowers the value. Two gains:
- ``pipeline`` (the study's method): value = PipelinePCost. A move's gain is the decrease of the
  pipeline cost along the current stage order, i.e. of the bottleneck-matching costs on the path
  edges that touch a moved group. As the path is re-optimised after each applied move, that is a
  lower bound on the decrease of PipelinePCost. A device's badness: its dearest edge in the
  bottleneck matchings (at their optimal threshold) with its group's neighbours on the path.
- ``kl`` (the study's "hybrid" baseline, classic Kernighan–Lin): value = the total intra-group
  data-parallel cost, Σ over groups of Σ over ordered pairs of members of 2·(α + c_dp/(D_DP·β));
  the gain is its exact decrease; a device's badness is its share of that cost.
The pipeline value never rises: a pass keeps its empty prefix unless a longer one is lower.

Speed: matching costs are cached by the two groups' contents, and the matchings a step's
candidates need are computed together (one vectorised bisection, Hall's condition on bitmasks).
Open paths are exact (Held-Karp) up to _HELD_KARP_MAX groups; beyond, nearest neighbour from every
start plus 2-opt, so PipelinePCost is then an upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations
from typing import Iterator

import numpy as np

from profiler.errors import InputError
from scheduler.comm_cost import matching_cost
from scheduler.search import Problem

GAINS = ("pipeline", "kl")
_WIDTH = 2  # devices per group in 2-cycles: pp²/2·_WIDTH² candidate swaps a step
_PATIENCE = 4  # FM's early exit: most of a full-length pass walks away from an optimum it then undoes
_HELD_KARP_MAX = 12  # 2^12·12² steps per path; beyond that the exact path costs more than it helps
_HALL_MAX = 10  # Hall's test walks 2^D_DP row subsets; larger groups use comm_cost's matching
_BATCH = 256  # matchings per vectorised call: larger batches fall out of the CPU cache
_CACHE_LIMIT = 100_000  # cached matching costs (~30 MB) before the cache starts afresh; larger did not run faster
_TOLERANCE = 1e-12  # relative: an improvement must exceed rounding to count
_POPCOUNT = np.array([bin(i).count("1") for i in range(1 << _HALL_MAX)], dtype=np.int8)
Cycle = tuple[tuple[int, int], ...]  # (group, device) pairs: each device moves to the next pair's group


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveTables:
    """A problem's edge costs, computed once, and matchings cached by the two groups' bitmasks
    (rows = the lower-indexed group, as comm_cost orients them)."""

    problem: Problem
    pp_edge: np.ndarray  # α + c_pp/β: comm_cost's pipeline edge
    dp_edge: np.ndarray  # 2·(α + c_dp/(D_DP·β)), zero diagonal: comm_cost's data-parallel edge
    costs: dict[tuple[int, int], float] = field(default_factory=dict)
    partners: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)


def move_tables(problem: Problem) -> MoveTables:
    alpha, beta = problem.tables.latency_s, problem.tables.bandwidth_bytes_per_s
    with np.errstate(divide="ignore"):  # β = inf on the diagonal
        pp_edge = alpha + problem.pp_bytes / beta
        dp_edge = 2 * (alpha + problem.dp_bytes / (problem.dp * beta))  # as comm_cost.data_cost writes it
    np.fill_diagonal(dp_edge, 0.0)
    return MoveTables(problem=problem, pp_edge=pp_edge, dp_edge=dp_edge)


def members(mask: int) -> list[int]:
    """Devices of a group held as a bitmask, ascending."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def _member_rows(masks: list[int], k: int) -> np.ndarray:
    """members() of many groups of k devices at once: an array of their ascending device ids."""
    if max(masks).bit_length() > 64:
        return np.array([members(mask) for mask in masks])
    bits = np.unpackbits(np.array(masks, dtype="<u8").view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    return np.nonzero(bits)[1].reshape(-1, k)


def _hall(allowed: np.ndarray) -> np.ndarray:
    """Per k×k boolean matrix: is there a perfect matching? Hall: every row subset S reaches ≥ |S|
    columns. Column sets are 16-bit masks (k ≤ _HALL_MAX), a quarter of int64's memory traffic."""
    b, k, _ = allowed.shape
    rows = (allowed @ (1 << np.arange(k))).astype(np.uint16)
    reach = np.zeros((b, 1 << k), dtype=np.uint16)
    for i in range(k):  # subsets whose highest row is i = subsets of the lower rows, plus row i
        np.bitwise_or(reach[:, :1 << i], rows[:, i:i + 1], out=reach[:, 1 << i:2 << i])
    return (_POPCOUNT[reach] >= _POPCOUNT[:1 << k]).all(axis=1)


def _bottlenecks(edge: np.ndarray) -> np.ndarray:
    """Bottleneck perfect-matching cost of each k×k matrix: test the lower bound (every row and
    column needs an edge at most t) first, then bisect the sorted costs above it."""
    b, k, _ = edge.shape
    ordered = np.sort(edge.reshape(b, k * k), axis=1)
    low = np.maximum(edge.min(axis=2).max(axis=1), edge.min(axis=1).max(axis=1))
    lo, hi, first = (ordered < low[:, None]).sum(axis=1), np.full(b, k * k - 1), True
    while (open_ := np.flatnonzero(lo < hi)).size:
        mid = lo[open_] if first else (lo[open_] + hi[open_]) // 2
        ok = _hall(edge[open_] <= ordered[open_, mid][:, None, None])
        lo[open_], hi[open_], first = np.where(ok, lo[open_], mid + 1), np.where(ok, mid, hi[open_]), False
    return ordered[np.arange(b), lo]


def matching_costs(tables: MoveTables, keys: list[tuple[int, int]]) -> list[float]:
    """Bottleneck-matching costs of group pairs (bitmasks), through the cache."""
    found = {key: tables.costs.get(key) for key in keys}
    missing = [key for key, value in found.items() if value is None]
    k = tables.problem.dp
    for start in range(0, len(missing), _BATCH):
        chunk = missing[start:start + _BATCH]
        if k <= _HALL_MAX:
            rows, cols = (_member_rows([key[side] for key in chunk], k) for side in (0, 1))
            found.update(zip(chunk, _bottlenecks(tables.pp_edge[rows[:, :, None], cols[:, None, :]]).tolist()))
        else:
            p = tables.problem
            found.update((key, matching_cost(members(key[0]), members(key[1]), p.tables, p.pp_bytes)) for key in chunk)
    if len(tables.costs) + len(missing) > _CACHE_LIMIT:
        tables.costs.clear()
        tables.partners.clear()
    tables.costs.update((key, found[key]) for key in missing)
    return [found[key] for key in keys]


def _augment(row: int, allowed: list[int], owner: list[int], seen: list[int]) -> bool:
    """Kuhn's augmenting path from ``row`` over bitmask rows; owner maps column -> row."""
    free = allowed[row] & ~seen[0]
    while free:
        col = (free & -free).bit_length() - 1
        seen[0] |= 1 << col
        if owner[col] < 0 or _augment(owner[col], allowed, owner, seen):
            owner[col] = row
            return True
        free = allowed[row] & ~seen[0]
    return False


def _partner(tables: MoveTables, key: tuple[int, int], cost: float) -> tuple[int, ...]:
    """A perfect matching of the pair at its bottleneck cost: the partner column of each row."""
    if key not in tables.partners:
        edge = tables.pp_edge[np.ix_(members(key[0]), members(key[1]))]
        allowed = [sum(1 << int(c) for c in np.flatnonzero(row)) for row in edge <= cost]
        owner = [-1] * len(allowed)
        for row in range(len(allowed)):
            _augment(row, allowed, owner, [0])
        partner = [0] * len(owner)
        for col, row in enumerate(owner):
            partner[row] = col
        tables.partners[key] = tuple(partner)
    return tables.partners[key]


def weights(tables: MoveTables, masks: list[int]) -> np.ndarray:
    """The matrix of matching costs between groups that PipelinePCost's open path runs over."""
    pairs = list(combinations(range(len(masks)), 2))
    out = np.zeros((len(masks), len(masks)))
    for (i, j), cost in zip(pairs, matching_costs(tables, [(masks[i], masks[j]) for i, j in pairs])):
        out[i, j] = out[j, i] = cost
    return out


@lru_cache(maxsize=None)
def _subset_layers(n: int) -> tuple[np.ndarray, ...]:
    sizes = _POPCOUNT[:1 << n] if n <= _HALL_MAX else np.array([bin(m).count("1") for m in range(1 << n)])
    return tuple(np.flatnonzero(sizes == s) for s in range(2, n + 1))


def _held_karp(w: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """comm_cost.open_path_cost, vectorised over each layer of subsets: the same sums, the same minimum."""
    n = w.shape[0]
    bits = 1 << np.arange(n)
    best = np.full((1 << n, n), np.inf)
    best[bits, np.arange(n)] = 0.0
    for layer in _subset_layers(n):  # best[S, last] = min over j of best[S - last, j] + w[j, last]
        value = (best[layer[:, None] ^ bits[None, :]] + w.T[None, :, :]).min(axis=2)
        best[layer] = np.where(layer[:, None] & bits[None, :], value, np.inf)
    mask, last = (1 << n) - 1, int(np.argmin(best[-1]))
    cost, path = float(best[mask, last]), [last]
    while mask != 1 << last:
        mask ^= 1 << last
        last = int(np.argmin(best[mask] + w[:, last]))
        path.append(last)
    return cost, tuple(reversed(path))


def _greedy_path(w: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Nearest neighbour from every start, each polished by 2-opt segment reversals."""
    n, best = w.shape[0], (np.inf, ())
    for start in range(n):
        path, left = [start], set(range(n)) - {start}
        while left:
            path.append(min(left, key=lambda j: (w[path[-1], j], j)))
            left.remove(path[-1])
        improved = True
        while improved:
            improved = False
            for i, j in combinations(range(n), 2):  # reverse path[i..j]; the path is open at both ends
                before = (w[path[i - 1], path[i]] if i else 0) + (w[path[j], path[j + 1]] if j < n - 1 else 0)
                after = (w[path[i - 1], path[j]] if i else 0) + (w[path[i], path[j + 1]] if j < n - 1 else 0)
                if after < before - _TOLERANCE * before:
                    path[i:j + 1], improved = path[i:j + 1][::-1], True
        best = min(best, (float(sum(w[a, b] for a, b in zip(path, path[1:]))), tuple(path)))
    return best


def open_path(w: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Cheapest open path over all groups (see the module docstring on its size limit) and the path."""
    if w.shape[0] == 1:
        return 0.0, (0,)
    return (_held_karp if w.shape[0] <= _HELD_KARP_MAX else _greedy_path)(w)


def comm_value(tables: MoveTables, masks: list[int]) -> float:
    """DataPCost + 2·PipelinePCost, computed as comm_cost.comm_objective does, from the cache."""
    data = max(float(tables.dp_edge[np.ix_(g, g)].sum(axis=1).max()) for g in map(members, masks))
    return data + 2 * open_path(weights(tables, masks))[0]


def _moved(masks: list[int], cycle: Cycle) -> dict[int, int]:
    """New bitmasks of the groups a cycle touches: each gives its device to the next one."""
    return {g: masks[g] ^ (1 << d) ^ (1 << cycle[i - 1][1]) for i, (g, d) in enumerate(cycle)}


class _PipelineGain:
    """Local-search state under the pipeline gain: group bitmasks, matching costs, current path."""

    def __init__(self, tables: MoveTables, masks: list[int]) -> None:
        self.tables, self.masks = tables, list(masks)
        self.load(masks)

    def load(self, masks: list[int]) -> None:
        self.masks[:] = masks
        self.weights = weights(self.tables, self.masks)
        self._reorder()

    def _reorder(self) -> None:
        self.value, order = open_path(self.weights)
        self.edges = [(min(a, b), max(a, b)) for a, b in zip(order, order[1:])]
        self.incident = [[e for e in self.edges if g in e] for g in range(len(self.masks))]

    def apply(self, cycle: Cycle) -> None:
        for g, mask in _moved(self.masks, cycle).items():
            self.masks[g] = mask
        pairs = sorted({(min(g, h), max(g, h)) for g, _ in cycle for h in range(len(self.masks)) if h != g})
        costs = matching_costs(self.tables, [(self.masks[lo], self.masks[hi]) for lo, hi in pairs])
        for (lo, hi), cost in zip(pairs, costs):
            self.weights[lo, hi] = self.weights[hi, lo] = cost
        self._reorder()

    def badness(self) -> dict[int, float]:
        worst: dict[int, float] = {}
        for lo, hi in self.edges:
            key = (self.masks[lo], self.masks[hi])
            rows, cols = members(key[0]), members(key[1])
            for i, j in enumerate(_partner(self.tables, key, self.weights[lo, hi])):
                cost = float(self.tables.pp_edge[rows[i], cols[j]])
                for d in (rows[i], cols[j]):
                    worst[d] = max(worst.get(d, 0.0), cost)
        return worst

    def gains(self, cycles: list[Cycle]) -> list[float]:
        plans = []
        for cycle in cycles:
            new = _moved(self.masks, cycle)
            edges = sorted({e for g, _ in cycle for e in self.incident[g]})
            plans.append([(self.weights[lo, hi], (new.get(lo, self.masks[lo]), new.get(hi, self.masks[hi])))
                          for lo, hi in edges])
        keys = [key for plan in plans for _, key in plan]
        cost = dict(zip(keys, matching_costs(self.tables, keys)))
        return [sum(old - cost[key] for old, key in plan) for plan in plans]


class _KLGain:
    """Local-search state under the classic Kernighan–Lin gain over data-parallel edges."""

    def __init__(self, tables: MoveTables, masks: list[int]) -> None:
        self.both = tables.dp_edge + tables.dp_edge.T  # a pair's cost, both directions
        self.masks = list(masks)
        self.load(masks)

    def load(self, masks: list[int]) -> None:
        """Recomputes the sums from scratch, so rounding does not pile up over passes."""
        self.masks[:] = masks
        self.group = np.zeros(self.both.shape[0], dtype=int)
        for g, mask in enumerate(masks):
            self.group[members(mask)] = g
        self.link = self.both @ np.eye(len(masks))[self.group]  # link[d, g]: d's cost with g's members
        self.value = float(self.link[np.arange(len(self.group)), self.group].sum() / 2)

    def apply(self, cycle: Cycle) -> None:
        self.value -= self.gains([cycle])[0]
        for i, (g, d) in enumerate(cycle):
            to = cycle[(i + 1) % len(cycle)][0]
            self.link[:, g] -= self.both[:, d]
            self.link[:, to] += self.both[:, d]
            self.group[d] = to
            self.masks[g] ^= 1 << d
            self.masks[to] ^= 1 << d

    def badness(self) -> dict[int, float]:
        return {d: float(self.link[d, g]) for d, g in enumerate(self.group)}

    def gains(self, cycles: list[Cycle]) -> list[float]:
        """Σ over moved devices of (cost with the old group - cost with the new one + cost with the
        device it replaces there, which leaves as it arrives)."""
        return [float(sum(self.link[d, g] - self.link[d, cycle[(i + 1) % len(cycle)][0]]
                          + self.both[d, cycle[(i + 1) % len(cycle)][1]] for i, (g, d) in enumerate(cycle)))
                for cycle in cycles]


def _cycles(worst: list[list[int]], size: int) -> Iterator[Cycle]:
    """Candidate moves of ``size`` groups, in tie-break order."""
    if size == 2:
        for a, b in combinations(range(len(worst)), 2):
            for u in worst[a][:_WIDTH]:
                for v in worst[b][:_WIDTH]:
                    yield (a, u), (b, v)
        return
    for a, b, c in combinations(range(len(worst)), 3):
        if worst[a] and worst[b] and worst[c]:
            yield (a, worst[a][0]), (b, worst[b][0]), (c, worst[c][0])
            yield (a, worst[a][0]), (c, worst[c][0]), (b, worst[b][0])


def _best_move(state: _PipelineGain | _KLGain, worst: list[list[int]]) -> Cycle | None:
    """The candidate of largest gain, the first on a tie; triples (pp³ of them) only if no pair gains."""
    chosen: tuple[float, Cycle] | None = None
    for size in (2, 3):
        cycles = list(_cycles(worst, size))
        for gain, cycle in zip(state.gains(cycles), cycles):
            if chosen is None or gain > chosen[0]:
                chosen = (gain, cycle)
        if chosen is not None and chosen[0] > 0:
            break
    return chosen[1] if chosen else None


def _pass(state: _PipelineGain | _KLGain, cap: int) -> bool:
    """One pass (module docstring); True if it kept a lower value."""
    start = best = state.value
    best_masks, moves, since_best, locked = list(state.masks), 0, 0, set()
    while moves < cap and since_best < _PATIENCE:
        badness = state.badness()
        worst = [sorted((d for d in members(m) if d not in locked), key=lambda d: (-badness.get(d, 0.0), d))
                 for m in state.masks]
        move = _best_move(state, worst)
        if move is None:
            break
        state.apply(move)
        locked.update(d for _, d in move)
        moves, since_best = moves + 1, since_best + 1
        if state.value < best - _TOLERANCE * abs(best):
            best, best_masks, since_best = state.value, list(state.masks), 0
    state.load(best_masks)
    return best < start - _TOLERANCE * abs(start)


def improve(tables: MoveTables, masks: list[int], gain: str) -> list[int]:
    """The local search from a balanced partition given as group bitmasks."""
    if tables.problem.pp < 2:
        return list(masks)
    state = (_PipelineGain if gain == "pipeline" else _KLGain)(tables, masks)
    while _pass(state, cap=tables.problem.device_count // 2):
        pass
    return list(state.masks)


def local_search(problem: Problem, groups: list[list[int]], gain: str = "pipeline") -> list[list[int]]:
    """The cyclic-move local search (module docstring) from a balanced partition; groups ascending."""
    if gain not in GAINS:
        raise InputError(f"unknown gain {gain!r} (known: {', '.join(GAINS)})")
    balanced = len(groups) == problem.pp and all(len(g) == problem.dp for g in groups)
    if not balanced or sorted(d for g in groups for d in g) != list(range(problem.device_count)):
        raise InputError(f"groups must split the {problem.device_count} devices into {problem.pp} groups "
                         f"of {problem.dp}, got {groups}")
    masks = improve(move_tables(problem), [sum(1 << d for d in g) for g in groups], gain)
    return [members(m) for m in masks]
