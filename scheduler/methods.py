"""One entry to every search method: `sim plan` and the prediction table call ``plan_search``.

- ``ilp`` (default): exact MILPs with proven bounds (scheduler.ilp); for ``time`` the bound on
  the estimator plus candidates and a local search (scheduler.time_search);
- ``evolutionary``: the study's genetic algorithm (scheduler.evolutionary);
- ``random``: best of ``samples`` random assignments (scheduler.search).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from profiler.errors import InputError
from scheduler.evolutionary import evolutionary_search
from scheduler.placement import Placement
from scheduler.search import Problem, SearchResult, TimeBoundInputs, placement_of, random_search

METHODS = ("ilp", "evolutionary", "random")
OBJECTIVES = ("time", "comm")


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchSettings:
    method: str = "ilp"
    objective: str = "time"
    solver: str = "highs"
    time_limit_s: float = 60.0
    gap: float = 1e-3  # relative gap at which an exact solve may stop
    seed: int = 0
    samples: int = 200  # random
    population: int = 100  # evolutionary (docs/facts.md §5)
    offspring: int = 4900
    max_evaluations: int = 400  # ilp with the time objective: the local search's budget
    uneven: bool = False  # ilp with the time objective: stages may hold different layer counts
    deterministic: bool = False  # ilp with the time objective: no clock, no bound (scheduler.time_search)
    hints: tuple[tuple[tuple[int, ...], ...], ...] = ()  # ilp with the time objective: grids to try first

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"--method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.objective not in OBJECTIVES:
            raise InputError(f"--objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if not self.time_limit_s > 0:
            raise InputError(f"--time-limit must be positive, got {self.time_limit_s}")
        if not 0 <= self.gap < 1:
            raise InputError(f"--gap must be in [0, 1), got {self.gap}")


def plan_search(problem: Problem, settings: SearchSettings, evaluate: Callable[[Placement], float] | None,
                bound_inputs: Callable[[bool], TimeBoundInputs] | None = None,
                progress: Callable[[str], None] | None = None) -> SearchResult:
    """Run the method; ``bound_inputs(uneven)`` is called only when the ilp method needs them."""
    say = progress or (lambda _: None)
    if settings.method == "random":
        step = max(1, settings.samples // 10)
        return random_search(problem, settings.objective, evaluate, settings.samples, settings.seed,
                             lambda done, best: done % step or say(f"{done}/{settings.samples} samples, best {best:.3f}"))
    if settings.method == "evolutionary":
        step = max(1, settings.offspring // 20)
        return evolutionary_search(problem, settings.objective, evaluate, seed=settings.seed,
                                   population=settings.population, offspring=settings.offspring,
                                   progress=lambda done, best: done % step or say(
                                       f"{done}/{settings.offspring} offspring, best {best:.3f}"))
    if settings.objective == "comm":
        from scheduler.ilp import comm_ilp

        say("study cost (MILP)")
        result = comm_ilp(problem, solver=settings.solver, time_limit_s=settings.time_limit_s, gap=settings.gap)
        return SearchResult(placement=placement_of(problem, result.groups), value=result.value,
                            solver_s=result.solver_s, evaluated=1, bound=result.bound)
    from scheduler.time_search import TimeSearchSettings, time_ilp_search

    if evaluate is None or bound_inputs is None:
        raise ValueError("the time objective needs evaluate and bound_inputs")
    return time_ilp_search(problem, evaluate, bound_inputs(settings.uneven),
                           TimeSearchSettings(solver=settings.solver, time_limit_s=settings.time_limit_s,
                                              gap=settings.gap, max_evaluations=settings.max_evaluations,
                                              seed=settings.seed, uneven=settings.uneven,
                                              deterministic=settings.deterministic, hints=settings.hints),
                           progress=say)
