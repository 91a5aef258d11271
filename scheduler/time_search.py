"""The ``ilp`` method for the ``time`` objective: seconds per iteration of the study's runtime.

The estimator is no linear program, so the search works in steps:
1. three structured candidates: every stage group spread evenly over the classes (each pipeline
   can stay in a host or region: the structure of the study's comm optima), groups packed
   class by class (data-parallel groups inside a host or region), and small classes kept whole
   beside an even share of the big ones (a host's GPUs beside single-GPU instances);
2. a MILP lower bound on the estimator (scheduler.ilp.time_bound_model), minimised over all
   placements of the degrees and started from the best structured candidate: its bound is the
   certificate, its argmin two more candidates (replicas chained by bottleneck matchings, or
   "purest first": pipelines kept off slow links all the way where the counts allow);
3. a seeded local search from the best: swap two devices that no cost tells apart never,
   other pairs in a shuffled order, keep a swap when the estimator says it is faster, until a
   whole round brings nothing or the evaluations run out;
4. with ``uneven``, layers moved across stage boundaries while that is faster (faster GPUs take
   more layers; the stages with the embedding and the head may take fewer). The bound's
   inputs must then hold for any split (simulator.planning.time_bound_inputs(uneven=True)).
Every candidate's stage groups go in pipeline order; then each stage's parameter server is
chosen by the estimator, one stage at a time (the plan records it: Placement.ps_servers).

``deterministic`` (`sim report`, the what-if sweeps) leaves out what depends on the machine's
speed: no step 2 (a MILP stopped by its time limit ends wherever the clock left it), no
deadlines (step 3 stops at ``max_evaluations``), and with ``uneven`` only the final plan's layers
are balanced (step 4), which keeps it cheap without a clock.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Callable

from scheduler.classes import device_classes
from scheduler.comm_cost import chain_pipelines, pipelines_of
from scheduler.ilp import time_bound
from scheduler.layouts import blocks_layout
from scheduler.placement import Placement
from scheduler.search import Problem, SearchResult, TimeBoundInputs

# Shares of --time-limit: the structured candidates at most the first, the bound the second, the
# layer balancing keeps the last; the bound's own candidates and the local search have what is between.
STRUCTURED_SHARE, BOUND_SHARE, BALANCE_SHARE = 0.1, 0.5, 0.1
HELD_KARP_MAX = 10  # stages: beyond this the exact open path over stage groups costs seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeSearchSettings:
    solver: str = "highs"
    time_limit_s: float = 60.0
    gap: float = 1e-3
    max_evaluations: int = 400  # local-search budget; the time limit stops it too
    seed: int = 0
    uneven: bool = False  # balance layers over the stages (the bound's inputs must allow it)
    # No clock: every phase runs to its end (the local search to max_evaluations) and no bound
    # MILP is solved, since a MILP stopped by its time limit ends wherever the machine's speed
    # left it. The same inputs then give the same plan on any machine (`sim report`).
    deterministic: bool = False


def stage_placement(problem: Problem, grid: list[list[int]], servers: list[int] | None = None,
                    counts: list[int] | None = None) -> Placement:
    """Stages × replicas (one device each) as the study's runtime, with these parameter servers
    and these layers per stage (default: even)."""
    placement = blocks_layout([d for row in grid for d in row], problem.layers, problem.pp, problem.dp)
    layers = placement.stage_layers
    if counts:
        layers = tuple((end - n, end) for n, end in zip(counts, accumulate(counts)))
    return replace(placement, stage_layers=layers, ps_servers=tuple(servers) if servers else ())


def _spread_servers(grid: list[list[int]], cls: dict[int, int]) -> list[int]:
    """Each stage's server on the replica whose device's class (host or region) serves the
    fewest stages so far: stages whose servers share a host share its NIC."""
    load: dict[int, int] = {}
    servers = []
    for row in grid:
        r = min(range(len(row)), key=lambda i: (load.get(cls[row[i]], 0), i))
        load[cls[row[r]]] = load.get(cls[row[r]], 0) + 1
        servers.append(r)
    return servers


def _choose_servers(problem: Problem, grid: list[list[int]], evaluate, cls: dict[int, int],
                    preferred: list[int] | None = None, deadline: float = math.inf) -> tuple[float, list[int]]:
    """Start from the best of: servers spread over classes, replica 0 everywhere (the study's
    runtime), and each stage's ``preferred`` class; then one pass over the stages: each stage's
    server becomes the replica that makes the iteration fastest, the others as they are."""
    starts = [_spread_servers(grid, cls), [0] * problem.pp]
    if preferred:
        starts.append([next((r for r, d in enumerate(row) if cls[d] == c), 0) for row, c in zip(grid, preferred)])
    value, servers = min((evaluate(stage_placement(problem, grid, start)), start) for start in starts)
    # Replicas whose pipelines run through the same classes serve alike (twins, as early or late).
    kind = [tuple(cls[grid[s][r]] for s in range(problem.pp)) for r in range(problem.dp)]
    for s in range(problem.pp):
        firsts = {}
        for r in range(problem.dp):
            firsts.setdefault((cls[grid[s][r]], kind[r]), r)
        for r in firsts.values():
            if (cls[grid[s][r]], kind[r]) == (cls[grid[s][servers[s]]], kind[servers[s]]):
                continue
            if time.perf_counter() > deadline:
                return value, servers
            trial = servers[:s] + [r] + servers[s + 1:]
            candidate = evaluate(stage_placement(problem, grid, trial))
            if candidate < value * (1 - 1e-9):
                value, servers = candidate, trial
    return value, servers


def _local_search(problem: Problem, grid: list[list[int]], servers: list[int], counts: list[int] | None, value: float,
                  evaluate: Callable[[Placement], float], cls: dict[int, int], settings: TimeSearchSettings,
                  deadline: float) -> tuple[float, list[list[int]], list[int]]:
    """First-improvement swaps of two workers' devices (see the module docstring)."""
    slots = [(s, r) for s in range(problem.pp) for r in range(problem.dp)]
    pairs = [(a, b) for i, a in enumerate(slots) for b in slots[i + 1:]]
    rng = random.Random(settings.seed)
    grid = [list(row) for row in grid]
    evaluations, improved = 0, True
    while improved:
        improved = False
        rng.shuffle(pairs)
        for (s1, r1), (s2, r2) in pairs:
            if evaluations >= settings.max_evaluations or time.perf_counter() > deadline:
                return value, grid, servers
            x, y = grid[s1][r1], grid[s2][r2]
            serving = {(s1, r1), (s2, r2)} & {(s, servers[s]) for s in (s1, s2)}
            if cls[x] == cls[y] and not serving:
                continue  # twins in the same role: the swap changes nothing
            grid[s1][r1], grid[s2][r2] = y, x
            candidate = evaluate(stage_placement(problem, grid, servers, counts))
            evaluations += 1
            if candidate < value * (1 - 1e-9):
                value, improved = candidate, True
            else:
                grid[s1][r1], grid[s2][r2] = x, y
    return value, grid, servers


def _balance_layers(problem: Problem, grid: list[list[int]], servers: list[int], value: float,
                    evaluate: Callable[[Placement], float], deadline: float,
                    counts: list[int] | None = None) -> tuple[float, list[int]]:
    """Move one layer from a stage to another while the estimator says the iteration gets
    shorter: stages of faster GPUs take more layers, and the first and last stage, which also
    hold the embedding and the head, may take fewer."""
    counts = list(counts or [problem.layers // problem.pp] * problem.pp)
    moves = [(give, take) for give in range(problem.pp) for take in range(problem.pp) if give != take]
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for give, take in moves:
            if counts[give] == 1 or time.perf_counter() > deadline:
                continue
            trial = list(counts)
            trial[give] -= 1
            trial[take] += 1
            candidate = evaluate(stage_placement(problem, grid, servers, trial))
            if candidate < value * (1 - 1e-9):
                value, counts, improved = candidate, trial, True
    return value, counts


def _purest_first(ordered: list[list[int]], tables, size_bytes: float) -> list[list[int]]:
    """Stage groups in pipeline order to stages × replicas, keeping as many pipelines as can
    off slow links all the way: at each boundary the pipelines whose transfers have been cheapest
    so far choose first, each the next device that keeps its slowest transfer lowest. (A
    bottleneck matching per boundary ignores the way a pipeline came, so every pipeline may end
    up crossing a slow link somewhere, and all of them are then late for the sync.)"""
    cost = tables.latency_s + size_bytes / tables.bandwidth_bytes_per_s
    stages = [list(ordered[0])]
    worst = [0.0] * len(ordered[0])
    for nxt in ordered[1:]:
        free = list(nxt)
        row = [0] * len(worst)
        for r in sorted(range(len(worst)), key=lambda r: (worst[r], r)):
            here = stages[-1][r]
            pick = min(range(len(free)), key=lambda i: (max(worst[r], cost[here, free[i]]), cost[here, free[i]], i))
            row[r] = free.pop(pick)
            worst[r] = max(worst[r], float(cost[here, row[r]]))
        stages.append(row)
    return stages


def _spread(classes: tuple[tuple[int, ...], ...], pp: int) -> list[list[int]] | None:
    """Every stage group takes the same share of every class, so each pipeline can stay inside
    one class (the structure of the study's optima, docs/facts.md §5); None if a class does not split."""
    if any(len(members) % pp for members in classes):
        return None
    return [[d for members in classes for d in members[g::pp]] for g in range(pp)]


def _packed(classes: tuple[tuple[int, ...], ...], dp: int) -> list[list[int]] | None:
    """Stage groups filled class after class: data-parallel groups inside a host or region."""
    if any(len(members) % dp for members in classes):
        return None
    flat = [d for members in classes for d in members]
    return [flat[i:i + dp] for i in range(0, len(flat), dp)]


def _whole(classes: tuple[tuple[int, ...], ...], pp: int, dp: int) -> list[list[int]] | None:
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


def time_ilp_search(problem: Problem, evaluate: Callable[[Placement], float], inputs: TimeBoundInputs,
                    settings: TimeSearchSettings,
                    progress: Callable[[str], None] | None = None) -> SearchResult:
    started = time.perf_counter()
    deadline = math.inf if settings.deterministic else started + settings.time_limit_s
    say = progress or (lambda _: None)
    calls = 0

    def counted(placement: Placement) -> float:
        nonlocal calls
        calls += 1
        return evaluate(placement)

    classes = device_classes(inputs.tables, inputs.kinds)
    cls = classes.index
    structured = [groups for groups in (_spread(classes.members, problem.pp), _packed(classes.members, problem.dp),
                                        _whole(classes.members, problem.pp, problem.dp)) if groups is not None]
    if not structured:  # devices in order: something to start from
        structured.append([list(range(g * problem.dp, (g + 1) * problem.dp)) for g in range(problem.pp)])
    best = None

    def consider(grid: list[list[int]], preferred: list[int] | None, share_s: float) -> None:
        """The stage groups in this order and reversed: an open path costs the same both ways, but
        the first stage holds the embedding, the last the head, and the barrier goes in rank order."""
        nonlocal best
        for way in (grid, grid[::-1]):
            until = lambda: math.inf if settings.deterministic else time.perf_counter() + share_s / 2
            value, servers = _choose_servers(problem, way, counted, cls,
                                             preferred if way is grid or preferred is None else preferred[::-1], until())
            counts = None
            if settings.uneven and not settings.deterministic:  # deterministic: only the final plan's (cheaper)
                value, counts = _balance_layers(problem, way, servers, value, counted, until())
            if best is None or value < best[0]:
                best = (value, way, servers, counts)

    say(f"{len(structured)} structured candidates")
    for groups in structured:  # stages along the cheapest open path of their transfers
        ordered = (pipelines_of(groups, inputs.tables, inputs.activation_bytes) if problem.pp <= HELD_KARP_MAX
                   else chain_pipelines(groups, inputs.tables, inputs.activation_bytes))
        consider(ordered, None, settings.time_limit_s * STRUCTURED_SHARE / len(structured))
    bound = None
    if not settings.deterministic:
        say(f"best structured {best[0]:.3f} s; iteration bound (MILP) from it")
        bound = time_bound(inputs, problem.pp, problem.dp, solver=settings.solver,
                           time_limit_s=settings.time_limit_s * BOUND_SHARE, gap=settings.gap, classes=classes,
                           start=(best[1], [row[r] for row, r in zip(best[1], best[2])]))
        say(f"bound {bound.bound:.3f} s")
        if bound.groups is not None:
            share = (deadline - time.perf_counter()) * 0.25
            for grid in (chain_pipelines(bound.groups, inputs.tables, inputs.activation_bytes),
                         _purest_first(bound.groups, inputs.tables, inputs.activation_bytes)):
                consider(grid, bound.servers, share)
    value, grid, servers, counts = best
    say(f"best candidate {value:.3f} s; local search")
    balance_s = 0.0 if settings.deterministic else settings.time_limit_s * BALANCE_SHARE * settings.uneven
    value, grid, servers = _local_search(problem, grid, servers, counts, value, counted, cls, settings,
                                         deadline - balance_s)
    if settings.uneven:
        say(f"after local search {value:.3f} s; layers per stage")
        value, counts = _balance_layers(problem, grid, servers, value, counted, deadline, counts)
    return SearchResult(placement=stage_placement(problem, grid, servers, counts), value=value,
                        solver_s=time.perf_counter() - started, evaluated=calls,
                        bound=None if bound is None else min(bound.bound, value))
