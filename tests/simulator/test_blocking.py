"""The queue-free 1F1B timing: exact closed forms, and the steady-state extension."""

from __future__ import annotations

import pytest

from simulator.blocking import run_schedule, schedule_ends


def transfers(stages: int, seconds: float) -> dict[tuple[str, int], float]:
    return {(d, b): seconds for d in ("f", "b") for b in range(stages - 1)}


@pytest.mark.parametrize("stages, micro_batches", [(1, 5), (2, 4), (4, 8), (8, 3)])
def test_no_communication_cost_gives_the_1f1b_closed_form(stages, micro_batches):
    ends = run_schedule([1.0] * stages, [2.0] * stages, transfers(stages, 0.0), micro_batches)
    assert ends[0] == pytest.approx((micro_batches + stages - 1) * 3.0)
    assert max(ends) == ends[0]  # the first stage finishes last


def test_extension_of_the_steady_state_equals_the_full_run():
    forward, backward = [1.0, 1.2, 0.9, 1.5], [2.0, 2.1, 1.8, 2.6]
    times = {("f", 0): 0.3, ("b", 0): 0.2, ("f", 1): 1.1, ("b", 1): 0.9, ("f", 2): 0.1, ("b", 2): 0.4}
    full = run_schedule(forward, backward, times, 300)
    extended = schedule_ends(tuple(forward), tuple(backward), tuple(times.items()), 300)
    assert extended == pytest.approx(full, rel=1e-9)


def test_a_slower_link_never_speeds_the_schedule_up():
    base = run_schedule([1.0] * 4, [2.0] * 4, transfers(4, 0.5), 16)
    slower = transfers(4, 0.5) | {("f", 1): 0.9}
    assert max(run_schedule([1.0] * 4, [2.0] * 4, slower, 16)) >= max(base)
