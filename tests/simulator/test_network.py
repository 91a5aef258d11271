"""The fluid max-min network against timelines computed by hand."""

from __future__ import annotations

import math
import random

import pytest
import simpy

from profiler.network.routes import Network, Route, max_min_rates
from simulator.engine.flows import FlowNetwork

INF = math.inf


def make_network(
    capacities: list[float], routes: dict[tuple[int, int], tuple[tuple[int, ...], float, float]]
) -> Network:
    """routes: (src, dst) -> (resources, per-flow cap, latency)."""
    return Network(
        resource_names=tuple(f"r{i}" for i in range(len(capacities))),
        capacities_bytes_per_s=tuple(capacities),
        routes={
            pair: Route(resources=res, flow_cap_bytes_per_s=cap, latency_s=lat)
            for pair, (res, cap, lat) in routes.items()
        },
    )


def run_flows(network: Network, flows: list[tuple[float, int, int, float]]) -> list[float]:
    """Start (at_s, src, dst, size_bytes) flows; return each one's delivery time."""
    env = simpy.Environment()
    net = FlowNetwork(env, network)
    delivered = [math.nan] * len(flows)

    def starter(index: int, at_s: float, src: int, dst: int, size: float):
        yield env.timeout(at_s)
        yield net.start(src, dst, size)
        delivered[index] = env.now

    for index, flow in enumerate(flows):
        env.process(starter(index, *flow))
    env.run()
    return delivered


def test_single_flow_takes_size_over_capacity_plus_latency():
    network = make_network([10.0], {(0, 1): ((0,), INF, 0.5)})
    assert run_flows(network, [(0.0, 0, 1, 100.0)]) == [pytest.approx(10.5, rel=1e-9)]


def test_per_flow_cap_below_capacity_sets_the_rate():
    network = make_network([10.0], {(0, 1): ((0,), 4.0, 0.5)})
    assert run_flows(network, [(0.0, 0, 1, 100.0)]) == [pytest.approx(25.5, rel=1e-9)]


def test_route_without_resources_runs_at_its_cap():
    network = make_network([10.0], {(0, 1): ((), 5.0, 1.0)})
    assert run_flows(network, [(2.0, 0, 1, 100.0)]) == [pytest.approx(23.0, rel=1e-9)]


def test_route_without_resources_or_cap_is_rejected():
    network = make_network([10.0], {(0, 1): ((), INF, 1.0)})
    net = FlowNetwork(simpy.Environment(), network)
    with pytest.raises(ValueError, match="cannot carry a flow"):
        net.start(0, 1, 100.0)


def test_missing_route_is_rejected():
    net = FlowNetwork(simpy.Environment(), make_network([10.0], {(0, 1): ((0,), INF, 0.0)}))
    with pytest.raises(ValueError, match="no route from device 1 to device 0"):
        net.start(1, 0, 1.0)


def test_zero_byte_flow_is_delivered_after_latency():
    network = make_network([10.0], {(0, 1): ((0,), INF, 0.75)})
    assert run_flows(network, [(1.0, 0, 1, 0.0)]) == [pytest.approx(1.75, rel=1e-9)]


def test_two_flows_started_together_share_equally():
    network = make_network([10.0], {(0, 1): ((0,), INF, 0.0), (2, 1): ((0,), INF, 0.0)})
    delivered = run_flows(network, [(0.0, 0, 1, 100.0), (0.0, 2, 1, 100.0)])
    assert delivered == [pytest.approx(20.0, rel=1e-9)] * 2


def test_later_flow_gets_the_fair_share():
    # Flow 1 alone until t=4 sends 40 of 100 bytes; then both get 5 B/s, so flow 1 ends at
    # 4 + 60/5 = 16 with flow 2 at 60 sent; flow 2's last 40 bytes at 10 B/s end at 20.
    network = make_network([10.0], {(0, 1): ((0,), INF, 0.0), (2, 1): ((0,), INF, 0.0)})
    delivered = run_flows(network, [(0.0, 0, 1, 100.0), (4.0, 2, 1, 100.0)])
    assert delivered == [pytest.approx(16.0, rel=1e-9), pytest.approx(20.0, rel=1e-9)]


def test_max_min_across_a_tight_and_a_loose_resource():
    # Flow A crosses tight r0 (10) and loose r1 (30); flow B only r1. A gets 10, B the leftover
    # 20. A (100 B) ends at 10 when B has sent 200 of 300; B's last 100 B at 30 B/s take 10/3 s.
    network = make_network([10.0, 30.0], {(0, 1): ((0, 1), INF, 0.0), (2, 1): ((1,), INF, 0.0)})
    delivered = run_flows(network, [(0.0, 0, 1, 100.0), (0.0, 2, 1, 300.0)])
    assert delivered == [pytest.approx(10.0, rel=1e-9), pytest.approx(40.0 / 3.0, rel=1e-9)]


def test_capped_flow_leaves_the_rest_to_the_other():
    network = make_network([30.0], {(0, 1): ((0,), 5.0, 0.0), (2, 1): ((0,), INF, 0.0)})
    delivered = run_flows(network, [(0.0, 0, 1, 50.0), (0.0, 2, 1, 250.0)])
    assert delivered == [pytest.approx(10.0, rel=1e-9), pytest.approx(10.0, rel=1e-9)]


def test_flows_on_disjoint_resources_do_not_interact():
    network = make_network(
        [10.0, 10.0], {(0, 1): ((0,), INF, 0.0), (2, 3): ((1,), INF, 0.0)}
    )
    delivered = run_flows(
        network, [(0.0, 0, 1, 100.0), (0.0, 2, 3, 100.0), (5.0, 2, 3, 10.0)]
    )
    # the third flow halves flow 2's rate from t=5 to t=7 but leaves flow 1 alone
    assert delivered == [
        pytest.approx(10.0, rel=1e-9),
        pytest.approx(11.0, rel=1e-9),
        pytest.approx(7.0, rel=1e-9),
    ]


def test_max_min_rates_on_a_chain_of_resources():
    # r1 (12 shared by A and B) saturates first at 6 each; C takes what B leaves of r2 (20 - 6).
    rates = max_min_rates([((0, 1), INF), ((1, 2), INF), ((2,), INF)], [10.0, 12.0, 20.0])
    assert rates == [pytest.approx(6.0), pytest.approx(6.0), pytest.approx(14.0)]


def test_max_min_rates_mixes_caps_and_resources():
    rates = max_min_rates([((0,), 2.0), ((0,), INF), ((0,), INF), ((), 7.0)], [10.0])
    assert rates == [pytest.approx(2.0), pytest.approx(4.0), pytest.approx(4.0), 7.0]


def test_records_hold_start_last_byte_and_delivery():
    network = make_network([10.0], {(0, 1): ((0,), INF, 0.5)})
    env = simpy.Environment()
    net = FlowNetwork(env, network, record=True)

    def later():
        yield env.timeout(1.0)
        net.start(0, 1, 20.0)

    env.process(later())
    env.run()
    (record,) = net.records
    assert (record.src_device, record.dst_device, record.size_bytes) == (0, 1, 20.0)
    assert record.start_s == pytest.approx(1.0, rel=1e-9)
    assert record.last_byte_s == pytest.approx(3.0, rel=1e-9)
    assert record.delivered_s == pytest.approx(3.5, rel=1e-9)
    assert net.active_flows == 0


def test_many_staggered_flows_finish_in_the_fluid_order():
    # n equal flows started 1 s apart on one resource: a non-trivial mix of arrivals and
    # departures. Total work is conserved, so the last delivery is at n * size / capacity
    # whenever the resource never idles.
    n, size, capacity = 20, 50.0, 10.0
    network = make_network([capacity], {(0, 1): ((0,), INF, 0.0)})
    delivered = run_flows(network, [(float(i), 0, 1, size) for i in range(n)])
    assert max(delivered) == pytest.approx(n * size / capacity, rel=1e-9)
    assert delivered == sorted(delivered)  # processor sharing keeps first-in first-out here


def random_network(rng: random.Random, devices: int, resources: int) -> Network:
    routes = {}
    for src in range(devices):
        for dst in range(devices):
            if src != dst:
                crossed = tuple(rng.sample(range(resources), rng.randint(1, 3)))
                cap = rng.choice([INF, rng.uniform(1.0, 20.0)])
                routes[(src, dst)] = (crossed, cap, rng.choice([0.0, rng.uniform(0.0, 0.5)]))
    return make_network([rng.uniform(5.0, 30.0) for _ in range(resources)], routes)


def reference_deliveries(
    network: Network, flows: list[tuple[float, int, int, float]]
) -> list[float]:
    """The fluid model with a global recompute at every arrival and departure."""
    arrivals = sorted(range(len(flows)), key=lambda i: flows[i][0], reverse=True)
    remaining: dict[int, float] = {}
    delivered = [math.nan] * len(flows)
    now = 0.0
    while arrivals or remaining:
        active = list(remaining)
        routes = [network.route(flows[i][1], flows[i][2]) for i in active]
        rates = max_min_rates(
            [(r.resources, r.flow_cap_bytes_per_s) for r in routes],
            network.capacities_bytes_per_s,
        )
        finishes = [now + remaining[i] / rate for i, rate in zip(active, rates)]
        next_s = min(finishes + [flows[arrivals[-1]][0] if arrivals else INF])
        for i, rate, finish, route in zip(active, rates, finishes, routes):
            remaining[i] -= rate * (next_s - now)
            if finish <= next_s * (1 + 1e-12):
                del remaining[i]
                delivered[i] = next_s + route.latency_s
        now = next_s
        while arrivals and flows[arrivals[-1]][0] <= now:
            i = arrivals.pop()
            if flows[i][3] == 0:
                delivered[i] = now + network.route(flows[i][1], flows[i][2]).latency_s
            else:
                remaining[i] = flows[i][3]
    return delivered


@pytest.mark.parametrize("seed", range(10))
def test_component_recompute_matches_global_recompute(seed):
    rng = random.Random(seed)
    network = random_network(rng, devices=5, resources=6)
    pairs = sorted(network.routes)
    flows = [
        (rng.choice([0.0, rng.uniform(0.0, 20.0)]), *rng.choice(pairs),
         rng.choice([0.0, rng.uniform(1.0, 200.0)]))
        for _ in range(40)
    ]
    expected = reference_deliveries(network, flows)
    assert run_flows(network, flows) == [pytest.approx(t, rel=1e-9) for t in expected]


@pytest.mark.parametrize("seed", range(10))
def test_max_min_rates_are_feasible_and_each_flow_has_a_bottleneck(seed):
    rng = random.Random(seed)
    capacities = [rng.uniform(1.0, 10.0) for _ in range(5)]
    flows = [
        (tuple(rng.sample(range(5), rng.randint(1, 3))), rng.choice([INF, rng.uniform(0.5, 5)]))
        for _ in range(12)
    ]
    rates = max_min_rates(flows, capacities)
    load = [0.0] * len(capacities)
    for (resources, cap), rate in zip(flows, rates):
        assert 0 < rate <= cap * (1 + 1e-12)
        for r in resources:
            load[r] += rate
    assert all(used <= c * (1 + 1e-12) for used, c in zip(load, capacities))
    # max-min: a flow is at its cap, or crosses a saturated resource where no flow gets more
    for (resources, cap), rate in zip(flows, rates):
        at_cap = rate >= cap * (1 - 1e-12)
        bottlenecked = any(
            load[r] >= capacities[r] * (1 - 1e-12)
            and all(other <= rate * (1 + 1e-12)
                    for (res2, _), other in zip(flows, rates) if r in res2)
            for r in resources
        )
        assert at_cap or bottlenecked


def test_max_min_rates_rejects_a_resource_listed_twice():
    with pytest.raises(ValueError, match="lists resource 0 twice"):
        max_min_rates([((0, 0), INF)], [10.0])


def test_route_listing_a_resource_twice_uses_it_once():
    network = make_network([10.0], {(0, 1): ((0, 0), INF, 0.0)})
    assert run_flows(network, [(0.0, 0, 1, 100.0)]) == [pytest.approx(10.0, rel=1e-9)]
