"""sim validate: the measured breakdown of a run report, the comparison, and bad reports."""

from __future__ import annotations

import pytest

from profiler.errors import InputError
from simulator.validate import compare, measured


def report(schedule: str) -> dict:
    spans = [
        [("forward", 0.0, 0.2), ("pipeline", 0.2, 0.5), ("backward", 0.5, 0.9), ("dp_sync", 0.9, 1.0)],
        [("pipeline", 0.0, 0.2), ("forward", 0.2, 0.4), ("backward", 0.4, 0.8), ("optimizer", 0.8, 0.9)],
    ]
    return {"schema": "run-report/1", "schedule": schedule, "iteration_s": [1.1, 0.9],
            "ranks": [{"spans": [{"category": c, "start_s": a, "end_s": b} for c, a, b in rank]} for rank in spans]}


def test_the_measured_breakdown_is_the_mean_over_ranks_and_idle_the_rest() -> None:
    iteration, parts = measured(report("1f1b"), "run.json")
    assert iteration == pytest.approx(1.0)
    assert parts["compute_s"] == pytest.approx((0.6 + 0.7) / 2) and parts["pipeline_s"] == pytest.approx(0.25)
    assert parts["dp_sync_s"] == pytest.approx(0.05) and parts["idle_s"] == pytest.approx((0.0 + 0.1) / 2)
    assert sum(parts.values()) == pytest.approx(iteration)


def test_with_gpipe_waiting_for_an_input_is_idle_as_the_simulator_counts_it() -> None:
    _, parts = measured(report("gpipe"), "run.json")
    assert parts["pipeline_s"] == 0.0 and parts["idle_s"] == pytest.approx((0.3 + 0.3) / 2)


def test_rows_give_the_error_against_the_measurement() -> None:
    rows = compare(1.1, {"compute_s": 0.65, "pipeline_s": 0.25, "dp_sync_s": 0.1, "idle_s": 0.1}, report("1f1b"), "r")
    assert [r.part for r in rows] == ["iteration", "compute", "tp_comm", "pipeline", "dp_sync", "idle"]
    assert rows[0].error == pytest.approx(0.1) and rows[2].error is None and rows[4].error == pytest.approx(1.0)


@pytest.mark.parametrize("doc,message", [
    ({"schema": "plan/1"}, "expected a run report"),
    ({"schema": "run-report/1", "iteration_s": [1.0]}, "malformed run report"),
    ({"schema": "run-report/1", "iteration_s": [], "ranks": []}, "no iterations or no ranks"),
    ({"schema": "run-report/1", "iteration_s": [1.0], "ranks": [{"spans": [{"category": "lunch", "start_s": 0,
                                                                         "end_s": 1}]}]}, "unknown span category"),
])
def test_bad_reports_are_one_line_errors(doc, message) -> None:
    with pytest.raises(InputError, match=message):
        measured(doc, "run.json")
