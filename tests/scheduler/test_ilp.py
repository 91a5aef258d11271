"""The exact MILPs: equal to brute force on small instances, bounds never above a found plan,
no heuristic below a proven optimum, and the study's published optima reached and certified."""

from __future__ import annotations

from itertools import permutations

import pytest

from profiler.errors import InputError
from profiler.scenarios import geo, scenario, scheduler_matrices, universities
from scheduler.classes import device_classes
from scheduler.comm_cost import CommTables, comm_objective, comm_tables
from scheduler.ilp import comm_ilp
from scheduler.search import Problem, random_search


def brute_force(balanced_partitions, problem: Problem) -> float:
    return min(comm_objective(groups, problem.tables, problem.dp_bytes, problem.pp_bytes)
               for groups in balanced_partitions(list(range(problem.device_count)), problem.dp))


def small(tables: CommTables, pp: int, dp: int) -> Problem:
    return Problem(device_count=tables.size, layers=pp, pp=pp, dp=dp, tables=tables, dp_bytes=3e8, pp_bytes=2e8)


def test_classes_of_the_cases_are_their_hosts_or_regions():
    sizes = {name: device_classes(comm_tables(scenario(name).build())).sizes
             for name in ("ondemand", "spot", "universities", "regional", "world")}
    assert sizes == {"ondemand": (8,) * 8, "spot": (4,) * 8 + (32,), "universities": (32, 32),
                     "regional": (16,) * 4, "world": (8,) * 8}


def test_classes_of_distinct_devices_are_singletons_and_twins_cost_alike(random_tables):
    assert device_classes(random_tables(6, 0)).sizes == (1,) * 6
    two_regions = comm_tables(geo("t", {"a": 3, "b": 2}, (1, 5), {("a", "b"): (30, 1)}))
    classes = device_classes(two_regions)
    assert classes.members == ((0, 1, 2), (3, 4))
    assert classes.latency_s[0, 1] == pytest.approx(0.030) and classes.latency_s[0, 0] == pytest.approx(0.001)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pp,dp", [(2, 4), (4, 2), (2, 3)])
def test_ilp_equals_brute_force_on_distinct_devices(random_tables, balanced_partitions, seed, pp, dp):
    problem = small(random_tables(pp * dp, seed), pp, dp)
    result = comm_ilp(problem, time_limit_s=60, gap=0.0)
    best = brute_force(balanced_partitions, problem)
    assert result.value == pytest.approx(best, rel=1e-9)
    assert result.optimal and result.bound <= best + 1e-9
    assert result.bound == pytest.approx(best, rel=1e-6)


def test_ilp_equals_brute_force_with_twins_and_cbc_agrees(balanced_partitions):
    tables = comm_tables(geo("t", {"a": 4, "b": 2, "c": 2}, (2, 4),
                             {("a", "b"): (20, 1), ("a", "c"): (60, 0.5), ("b", "c"): (15, 2)}))
    problem = small(tables, 2, 4)
    best = brute_force(balanced_partitions, problem)
    for solver in ("highs", "cbc"):
        result = comm_ilp(problem, solver=solver, time_limit_s=60, gap=0.0)
        assert result.value == pytest.approx(best, rel=1e-9), solver
        assert result.bound <= best + 1e-9


def test_no_heuristic_beats_the_proven_optimum(random_tables):
    problem = small(random_tables(8, 7), 2, 4)
    optimum = comm_ilp(problem, time_limit_s=60, gap=0.0)
    for seed in range(3):
        assert random_search(problem, "comm", None, samples=50, seed=seed).value >= optimum.value - 1e-9


def test_the_study_optimum_of_universities_is_reached_and_certified():
    # docs/facts.md §5: published 16.09 s with D_DP = D_PP = 8, c_dp = 0.65e9 B, c_pp = 0.471e9 B.
    problem = Problem(device_count=64, layers=24, pp=8, dp=8, tables=comm_tables(universities()),
                      dp_bytes=0.65e9, pp_bytes=0.471e9)
    result = comm_ilp(problem, time_limit_s=60, gap=1e-6)
    assert result.value <= 16.09 and result.gap <= 1e-5
    # every stage group is half Ohio, half Virginia: the pipelines stay inside a region
    assert all(sorted(d < 32 for d in g) == [False] * 4 + [True] * 4 for g in result.groups)


def test_the_regional_optimum_with_the_study_matrices():
    problem = Problem(device_count=64, layers=24, pp=8, dp=8, tables=comm_tables(scheduler_matrices("regional")),
                      dp_bytes=0.65e9, pp_bytes=0.471e9)
    result = comm_ilp(problem, time_limit_s=60, gap=0.01)
    assert result.value <= 34.80 and result.gap <= 0.01 and result.bound <= result.value


def test_bad_solver_settings_are_input_errors(random_tables):
    problem = small(random_tables(4, 0), 2, 2)
    with pytest.raises(InputError, match="--solver"):
        comm_ilp(problem, solver="gurobi")
    with pytest.raises(InputError, match="--time-limit"):
        comm_ilp(problem, time_limit_s=0)


def test_every_group_ordering_is_covered_by_the_path_positions(random_tables):
    """The model's positions are the stage order: with 3 groups the ILP's cost equals the best
    over all orders, which comm_objective's open path computes."""
    problem = small(random_tables(6, 3), 3, 2)
    result = comm_ilp(problem, time_limit_s=60, gap=0.0)
    groups = result.groups
    by_order = min(comm_objective([groups[i] for i in order], problem.tables, 3e8, 2e8)
                   for order in permutations(range(3)))
    assert result.value == pytest.approx(by_order)
