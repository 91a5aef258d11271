"""The ``ilp`` method for the ``time`` objective: seconds per iteration of the study's runtime.

The estimator is no linear program, so the search works in steps:
1. structured candidates (scheduler.candidates): every stage group spread evenly over the
   classes (pipelines inside a host or region: the structure of the study's comm optima), groups
   packed class by class (data-parallel groups inside one) in the stage order whose slowest
   boundary is fastest, small classes kept whole beside an even share of the big ones, blocks of
   consecutive stages × pipelines on each host of several GPUs, and any ``hints`` (the plan of a
   neighbouring row of the table); each in the pipeline order that makes its rings and barriers
   cheapest, both ways round, with each stage's server where its ring's sync ends soonest (the
   best few also with the servers spread over the hosts);
2. a MILP lower bound on the estimator (scheduler.time_bound), minimised over all placements
   and started from the best candidate: its bound is the certificate, its argmin more candidates
   (replicas chained by bottleneck matchings, or "purest first": pipelines kept off slow links
   all the way where the counts allow);
3. each stage's server chosen by the estimator, then a seeded local search: swap two devices
   (never twins in the same role), keep a swap when the estimator says it is faster, until a
   whole round brings nothing or the evaluations run out;
4. with ``uneven``, layers moved across stage boundaries while that is faster (faster GPUs take
   more layers; the stages with the embedding and the head may take fewer). The bound's
   inputs must then hold for any split (simulator.planning.time_bound_inputs(uneven=True)).

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

import numpy as np

from scheduler import candidates
from scheduler.classes import device_classes
from scheduler.layouts import blocks_layout
from scheduler.placement import Placement
from scheduler.search import Problem, SearchResult, TimeBoundInputs
from scheduler.time_bound import time_bound

# Shares of --time-limit: the structured candidates at most the first, the bound MILP the second
# (kept for it), the layer balancing the third; the servers and the local search have the rest.
STRUCTURED_SHARE, BOUND_SHARE, BALANCE_SHARE = 0.3, 0.5, 0.1
KEPT_CANDIDATES = 3  # the best candidates also tried with their servers spread over the hosts


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
    hints: tuple[tuple[tuple[int, ...], ...], ...] = ()  # grids to try first (another row's plan, say)


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
                    deadline: float = math.inf, start: tuple[float, list[int]] | None = None,
                    evaluations: int | None = None) -> tuple[float, list[int]]:
    """From ``start`` (its value and servers) or the better of servers spread over classes and
    replica 0 everywhere (the study's runtime), one pass over the stages: each stage's server
    becomes the replica that makes the iteration fastest, the others as they are; at most
    ``evaluations`` estimates."""
    left = math.inf if evaluations is None else evaluations
    if start is None:
        starts = [_spread_servers(grid, cls), [0] * problem.pp]
        start = min((evaluate(stage_placement(problem, grid, servers)), servers) for servers in starts)
    value, servers = start
    D = problem.dp
    pipeline = [tuple(cls[grid[s][r]] for s in range(problem.pp)) for r in range(D)]
    for s in range(problem.pp):
        # Replicas alike in class, pipeline and ring neighbours serve alike (twins as early or late).
        kind = [(cls[grid[s][r]], pipeline[r], cls[grid[s][r - 1]], cls[grid[s][(r + 1) % D]]) for r in range(D)]
        for r in range(D):
            if kind[r] == kind[servers[s]] or kind.index(kind[r]) != r:
                continue
            if time.perf_counter() > deadline or left <= 0:
                return value, servers
            left -= 1
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


def _ring_servers(grid: list[list[int]], inputs: TimeBoundInputs) -> list[int]:
    """Each stage's server where its reduce and broadcast around the ring of its replicas end
    soonest (scheduler.candidates.ring_seconds)."""
    servers = []
    for s, row in enumerate(grid):
        here, there = np.array(row), np.roll(np.array(row), -1)
        _, server = candidates.ring_seconds(inputs.grad_bytes[s], inputs.latency_s[here, there],
                                            inputs.rate_bytes_per_s[here, there])
        servers.append(int(server[0]))
    return servers


def _structured(problem: Problem, inputs: TimeBoundInputs, classes, settings: TimeSearchSettings) -> list[list[list[int]]]:
    """Step 1's grids (before pipeline orders), the hints first."""
    P, D = problem.pp, problem.dp
    devices = set(range(problem.device_count))
    grids = [[list(row) for row in hint] for hint in settings.hints
             if len(hint) == P and all(len(row) == D for row in hint) and {d for row in hint for d in row} == devices]
    for groups in (candidates.spread(classes.members, P), candidates.packed(classes.members, D),
                   candidates.whole(classes.members, P, D)):
        if groups is not None:
            grids.append(candidates.stage_order(groups, inputs.tables, inputs.activation_bytes, classes.index))
    grids += candidates.host_blocks(inputs.hosts, P, D)
    if not grids:  # devices in order: something to start from
        grids.append([list(range(g * D, (g + 1) * D)) for g in range(P)])
    return grids


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
    early = [inputs.backward_tail_s[0] - tail for tail in inputs.backward_tail_s]
    seen: list[tuple[float, list[list[int]], list[int]]] = []

    def consider(grid: list[list[int]], until: float, ways: tuple[bool, ...] = (False, True)) -> None:
        """The grid in the pipeline order that makes its rings and barriers cheapest, both ways
        round (an open path costs the same both ways, but the first stage holds the embedding,
        the last the head), each stage's server where its ring's sync ends soonest."""
        for backwards in ways:
            if time.perf_counter() > until and seen:
                return
            ordered = candidates.pipeline_orders(grid[::-1] if backwards else grid, inputs.latency_s,
                                                 inputs.rate_bytes_per_s, list(inputs.grad_bytes), early,
                                                 inputs.rounds + 1, cls, keep=1)[0]
            servers = _ring_servers(ordered, inputs)
            seen.append((counted(stage_placement(problem, ordered, servers)), ordered, servers))

    grids = _structured(problem, inputs, classes, settings)
    say(f"{len(grids)} structured candidates")
    until = math.inf if settings.deterministic else started + settings.time_limit_s * STRUCTURED_SHARE
    for backwards in (False, True):  # every kind of candidate one way round before any the other way
        for grid in grids:
            consider(grid, until, (backwards,))
    bound = None
    if not settings.deterministic:
        value, grid, servers = min(seen, key=lambda item: item[0])
        say(f"best structured {value:.3f} s; iteration bound (MILP) from it")
        share = settings.time_limit_s * BOUND_SHARE
        bound = time_bound(inputs, problem.pp, problem.dp, solver=settings.solver,
                           time_limit_s=max(share / 2, min(deadline - time.perf_counter(), share)),
                           gap=settings.gap, classes=classes, start=(grid, [row[r] for row, r in zip(grid, servers)]),
                           best_s=value, progress=say)
        say(f"bound {bound.bound:.3f} s")
        if bound.groups is not None:
            ordered = candidates.stage_order(bound.groups, inputs.tables, inputs.activation_bytes, cls)
            for grid in (ordered, _purest_first(ordered, inputs.tables, inputs.activation_bytes)):
                consider(grid, deadline)
    seen.sort(key=lambda item: item[0])
    best = seen[0]
    for value, grid, servers in seen[:KEPT_CANDIDATES]:  # servers spread over the hosts instead
        spread_over = _spread_servers(grid, cls)
        if spread_over != servers and (settings.deterministic or time.perf_counter() < deadline):
            value = counted(stage_placement(problem, grid, spread_over))
            best = min(best, (value, grid, spread_over), key=lambda item: item[0])
    value, grid, servers = best
    until = math.inf if settings.deterministic else time.perf_counter() + (deadline - time.perf_counter()) / 2
    value, servers = _choose_servers(problem, grid, counted, cls, deadline=until, start=(value, servers),
                                     evaluations=settings.max_evaluations // 2)
    counts = None
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
