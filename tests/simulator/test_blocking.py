"""The queue-free 1F1B timing: exact closed forms, and the steady-state extension."""

from __future__ import annotations

import pytest

from simulator.estimator.blocking import run_schedule, schedule_ends


def transfers(stages: int, seconds: float, latency: float = 0.0) -> dict[tuple[str, int], tuple[float, float]]:
    """(occupancy, latency) of every boundary's transfers."""
    return {(d, b): (seconds, latency) for d in ("f", "b") for b in range(stages - 1)}


@pytest.mark.parametrize("stages, micro_batches", [(1, 5), (2, 4), (4, 8), (8, 3)])
def test_no_communication_cost_gives_the_1f1b_closed_form(stages, micro_batches):
    ends = run_schedule([1.0] * stages, [2.0] * stages, transfers(stages, 0.0), micro_batches)
    assert ends[0] == pytest.approx((micro_batches + stages - 1) * 3.0)
    assert max(ends) == ends[0]  # the first stage finishes last


def test_extension_of_the_steady_state_equals_the_full_run():
    forward, backward = [1.0, 1.2, 0.9, 1.5], [2.0, 2.1, 1.8, 2.6]
    times = {("f", 0): (0.3, 0.05), ("b", 0): (0.2, 0.05), ("f", 1): (1.1, 0.0), ("b", 1): (0.9, 0.1),
             ("f", 2): (0.1, 0.2), ("b", 2): (0.4, 0.0)}
    full = run_schedule(forward, backward, times, 300)
    extended = schedule_ends(tuple(forward), tuple(backward), tuple(times.items()), 300)
    assert extended == pytest.approx(full, rel=1e-9)


def test_a_slower_link_never_speeds_the_schedule_up():
    base = run_schedule([1.0] * 4, [2.0] * 4, transfers(4, 0.5), 16)
    slower = transfers(4, 0.5) | {("f", 1): (0.9, 0.0)}
    assert max(run_schedule([1.0] * 4, [2.0] * 4, slower, 16)) >= max(base)


def test_a_send_alone_is_done_when_its_last_byte_leaves():
    """2 stages, 1 micro-batch, transfers of occupancy 1 and latency 0.5: stage 0 sends F0 alone
    (done at 1 + 1), stage 1 receives it at 2.5, computes to 3.5 + 2, sends B0 (done at 6.5);
    stage 0, waiting since 2, has it at 7 and computes to 9."""
    ends = run_schedule([1.0, 1.0], [2.0, 2.0], transfers(2, 1.0, 0.5), 1)
    assert ends == pytest.approx([9.0, 6.5])
