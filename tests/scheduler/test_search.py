"""The random search: deterministic per seed, and its answer is what the objective says."""

from __future__ import annotations

import pytest

from profiler.errors import InputError
from profiler.model import TrainingSpec, gpt3_xl
from profiler.scenarios import universities
from scheduler.comm_cost import comm_objective, comm_tables
from scheduler.search import Problem, derived_bytes, random_search

TABLES = comm_tables(universities())


def problem(**change) -> Problem:
    args = dict(device_count=64, layers=24, pp=8, dp=8, tables=TABLES, dp_bytes=0.65e9, pp_bytes=0.471e9) | change
    return Problem(**args)


def groups_of(placement) -> list[list[int]]:
    return [[g[0] for g in replicas] for replicas in placement.devices]


def test_same_seed_same_plan_and_the_value_is_the_plans_cost():
    first = random_search(problem(), "comm", None, samples=30, seed=4)
    again = random_search(problem(), "comm", None, samples=30, seed=4)
    other = random_search(problem(), "comm", None, samples=30, seed=5)
    assert first.placement == again.placement and first.value == again.value
    assert other.placement != first.placement
    assert comm_objective(groups_of(first.placement), TABLES, 0.65e9, 0.471e9) == pytest.approx(first.value)


def test_more_samples_never_worse():
    few = random_search(problem(), "comm", None, samples=5, seed=1)
    many = random_search(problem(), "comm", None, samples=40, seed=1)
    assert many.value <= few.value


def test_time_objective_uses_the_callable():
    seen = []

    def evaluate(placement):
        seen.append(placement)
        return float(sum(placement.devices[0][r][0] for r in range(8)))  # any deterministic score

    result = random_search(problem(), "time", evaluate, samples=12, seed=0)
    assert len(seen) == 12
    assert result.value == min(evaluate(p) for p in seen[:12])


def test_bad_problems_are_input_errors():
    with pytest.raises(InputError, match="--pp 7"):
        problem(pp=7)
    with pytest.raises(InputError, match="do not divide"):
        problem(layers=20)
    with pytest.raises(InputError, match="--samples"):
        random_search(problem(), "comm", None, samples=0, seed=0)


def test_derived_bytes_follow_the_model():
    dp_bytes, pp_bytes = derived_bytes(gpt3_xl(24), TrainingSpec(global_batch=1024), 8, 8)
    assert dp_bytes == pytest.approx(gpt3_xl(24).total_params / 8 * 4)
    assert pp_bytes == 8 * 2**20 * 128  # 8 MiB per micro-batch, 128 micro-batches per pipeline
