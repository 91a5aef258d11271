"""The study's evolutionary search (docs/facts.md §5): a steady-state genetic algorithm over balanced
partitions of the devices into D_PP groups of D_DP (group k = the replicas of stage k), each
offspring improved by the cyclic-move local search of scheduler.cyclic_moves. Numbers only.

Seeded by ``random.Random(seed)`` alone:
1. ``population`` random permutations cut into blocks of D_DP (block k = group k), drawn exactly
   as random_search draws its samples: the first population is random_search's samples for the
   same seed, so the answer is never worse than random_search with ``samples=population``;
2. ``offspring`` times: two distinct parents at random; 5-point crossover of their device→group
   label vectors (5 distinct cuts in 1..N-1, labels from parent A, B, A, … between cuts); balance
   repair (each over-full group gives up a random sample of its surplus, the pooled surplus is
   shuffled and handed to the under-full groups in index order); the local search; the offspring
   replaces the worse of its parents (the later one on a tie) if its fitness is no worse.
Fitness: ``comm``, the study's objective DataPCost + 2·PipelinePCost; ``time``, evaluate() of the
placement the comm cost assumes (``placement_of``: the blocks layout of the stages in cheapest
open-path order, replicas chained by bottleneck matchings), so that the local search, which
shortens those pipeline links, works for it too.
"""

from __future__ import annotations

import random
import time
from typing import Callable

from profiler.errors import InputError
from scheduler.comm_cost import comm_objective
from scheduler.cyclic_moves import GAINS, comm_value, improve, members, move_tables
from scheduler.placement import Placement
from scheduler.search import Problem, SearchResult, placement_of

CROSSOVER_POINTS = 5  # docs/facts.md §5


def crossover(first: list[int], second: list[int], rng: random.Random) -> list[int]:
    """Labels from ``first`` and ``second`` alternately between CROSSOVER_POINTS random cuts."""
    n = len(first)
    cuts = sorted(rng.sample(range(1, n), min(CROSSOVER_POINTS, n - 1))) + [n]
    child, start = [], 0
    for k, end in enumerate(cuts):
        child.extend((first, second)[k % 2][start:end])
        start = end
    return child


def repair(labels: list[int], pp: int, dp: int, rng: random.Random) -> list[int]:
    """Balance: over-full groups give a random sample of their surplus to the under-full ones."""
    if len(labels) != pp * dp or not all(0 <= g < pp for g in labels):
        raise InputError(f"labels must be {pp * dp} group indices in [0, {pp}), got {labels}")
    groups = [[d for d, g in enumerate(labels) if g == k] for k in range(pp)]
    surplus = [d for group in groups if len(group) > dp for d in rng.sample(group, len(group) - dp)]
    rng.shuffle(surplus)
    out = list(labels)
    for k, group in enumerate(groups):
        for _ in range(dp - len(group)):
            out[surplus.pop()] = k
    return out


def _masks(labels: list[int], pp: int) -> list[int]:
    masks = [0] * pp
    for d, g in enumerate(labels):
        masks[g] |= 1 << d
    return masks


def _labels(masks: list[int], n: int) -> list[int]:
    labels = [0] * n
    for g, mask in enumerate(masks):
        for d in members(mask):
            labels[d] = g
    return labels


def _check(objective: str, evaluate: Callable | None, population: int, offspring: int, gain: str) -> None:
    if objective not in ("comm", "time"):
        raise InputError(f"unknown objective {objective!r} (known: comm, time)")
    if objective == "time" and evaluate is None:
        raise InputError("the time objective needs an evaluate callable")
    if population < 2:
        raise InputError(f"--population must be at least 2, got {population}")
    if offspring < 0:
        raise InputError(f"--offspring must be at least 0, got {offspring}")
    if gain not in GAINS:
        raise InputError(f"unknown gain {gain!r} (known: {', '.join(GAINS)})")


def evolutionary_search(problem: Problem, objective: str, evaluate: Callable[[Placement], float] | None, *,
                        seed: int, population: int = 100, offspring: int = 4900, gain: str = "pipeline",
                        progress: Callable[[int, float], None] | None = None) -> SearchResult:
    """The study's steady-state GA (module docstring); a seed gives one answer. ``progress(done,
    best)`` is called after each offspring."""
    _check(objective, evaluate, population, offspring, gain)
    started, rng, tables, n = time.perf_counter(), random.Random(seed), move_tables(problem), problem.device_count

    def fitness(masks: list[int]) -> float:
        if objective == "comm":
            return comm_value(tables, masks)
        return evaluate(placement_of(problem, [members(m) for m in masks]))

    order, pool, scores = list(range(n)), [], []
    for _ in range(population):
        rng.shuffle(order)  # as random_search draws
        pool.append([0] * n)
        for position, d in enumerate(order):
            pool[-1][d] = position // problem.dp
        scores.append(fitness(_masks(pool[-1], problem.pp)))
    for done in range(1, offspring + 1):
        i, j = rng.sample(range(population), 2)
        child = repair(crossover(pool[i], pool[j], rng), problem.pp, problem.dp, rng)
        masks = improve(tables, _masks(child, problem.pp), gain)
        value, worse = fitness(masks), max((scores[i], i), (scores[j], j))[1]
        if value <= scores[worse]:
            pool[worse], scores[worse] = _labels(masks, n), value
        if progress:
            progress(done, min(scores))
    best = min(range(population), key=lambda i: (scores[i], i))
    groups = [members(m) for m in _masks(pool[best], problem.pp)]
    value = scores[best]
    if objective == "comm":  # the cost model's own figure, not the cache's
        value = comm_objective(groups, problem.tables, problem.dp_bytes, problem.pp_bytes)
    return SearchResult(placement=placement_of(problem, groups), value=value,
                        solver_s=time.perf_counter() - started, evaluated=population + offspring)
