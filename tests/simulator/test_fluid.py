"""Fluid completion times of flows sharing resources, hand-computed."""

from __future__ import annotations

import math

import pytest

from profiler.network.routes import Route
from simulator.estimator.fluid import Phase, fluid_finish_s, fluid_phases_s


def route(*resources: int, cap: float = math.inf, latency: float = 0.0) -> Route:
    return Route(resources=resources, flow_cap_bytes_per_s=cap, latency_s=latency)


def test_one_flow() -> None:
    assert fluid_finish_s([route(0, latency=0.5)], [20.0], [10.0]) == pytest.approx([2.5])


def test_two_equal_flows_share() -> None:
    assert fluid_finish_s([route(0), route(0)], [10.0, 10.0], [10.0]) == pytest.approx([2.0, 2.0])


def test_early_finisher_releases_bandwidth() -> None:
    # both at 5 until t=2 (flow 0 done); flow 1 has 20 left at the full 10: done at t=4
    assert fluid_finish_s([route(0), route(0)], [10.0, 30.0], [10.0]) == pytest.approx([2.0, 4.0])


def test_latency_is_added_after_the_last_byte() -> None:
    finish = fluid_finish_s([route(0, latency=1.0), route(0, latency=0.25)], [10.0, 30.0], [10.0])
    assert finish == pytest.approx([3.0, 4.25])


def test_capped_flow_leaves_the_rest() -> None:
    # flow 0 capped at 2: flow 1 gets 8 and finishes 16 bytes at t=2; flow 0 then still capped: 10/2 = 5
    assert fluid_finish_s([route(0, cap=2.0), route(0)], [10.0, 16.0], [10.0]) == pytest.approx([5.0, 2.0])


def test_two_resources() -> None:
    # A on r0 (10), B on r0 and r1 (2): B at 2, A at 8. A's 16 bytes done at 2; B's 6 at 3.
    assert fluid_finish_s([route(0), route(0, 1)], [16.0, 6.0], [10.0, 2.0]) == pytest.approx([2.0, 3.0])


def test_empty_flow_takes_only_latency() -> None:
    assert fluid_finish_s([route(0, latency=0.1), route(0)], [0.0, 10.0], [10.0]) == pytest.approx([0.1, 1.0])


def test_phases_run_in_sequence_and_share() -> None:
    """Group 0: two phases of 10 bytes on a route with 1 s latency; group 1: one phase of 30 bytes,
    no latency, on the same 10 B/s resource. t 0-2: both at 5 (group 0's first flow done, delivered
    at 3); t 2-3: group 1 alone at 10 (10 left); t 3-5: both at 5, both done at 5; group 0's last
    delivered at 6."""
    slow, fast = route(0, latency=1.0), route(0)
    phases = [[Phase(routes=(slow,), sizes_bytes=(10.0,)), Phase(routes=(slow,), sizes_bytes=(10.0,))],
              [Phase(routes=(fast,), sizes_bytes=(30.0,))]]
    assert fluid_phases_s([0.0, 0.0], phases, [10.0]) == pytest.approx([6.0, 5.0])


def test_phases_run_one_after_another_each_with_its_latency() -> None:
    r = route(0, latency=0.5)
    twice = fluid_phases_s([1.0], [[Phase(routes=(r,), sizes_bytes=(10.0,))] * 2], [10.0])
    assert twice == pytest.approx([1.0 + 2 * 1.5])


def test_late_start_does_not_share_with_finished_group() -> None:
    r = route(0)
    phases = [[Phase(routes=(r,), sizes_bytes=(10.0,))], [Phase(routes=(r,), sizes_bytes=(10.0,))]]
    assert fluid_phases_s([0.0, 5.0], phases, [10.0]) == pytest.approx([1.0, 6.0])


def test_group_without_phases_finishes_at_its_start() -> None:
    assert fluid_phases_s([2.0], [[]], [1.0]) == pytest.approx([2.0])
