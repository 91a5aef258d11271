"""Max-min rates, ring all-reduce and routes, hand-computed; TCP's constants against docs/facts.md §2's transfers."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from profiler.cluster import Cluster, Device, Host, Interconnect, Link
from profiler.network.routes import Route, max_min_rates
from profiler.network.tcp import GLOO, GOODPUT_FRACTION, INITIAL_WINDOW_BYTES, NCCL, RECEIVE_WINDOW_BYTES, slow_start_s
from profiler.network.topology import Topology, ring_allreduce_s, route_rates
from profiler.scenarios import SCENARIOS

GBIT = 1e9 / 8
INF = math.inf


def route(*resources: int, cap: float = INF, latency: float = 0.0) -> Route:
    return Route(resources=resources, flow_cap_bytes_per_s=cap, latency_s=latency)


# -- max_min_rates ------------------------------------------------------------------------------
def test_one_shared_resource_splits_evenly() -> None:
    assert route_rates([route(0), route(0)], [10.0]) == pytest.approx([5.0, 5.0])
    assert route_rates([route(0)] * 4, [10.0]) == pytest.approx([2.5] * 4)


def test_two_resources_bottleneck_then_leftover() -> None:
    # A: r0 only; B: r0 and r1 (2). B is held to 2 by r1, A takes the 8 left on r0.
    assert route_rates([route(0), route(0, 1)], [10.0, 2.0]) == pytest.approx([8.0, 2.0])


def test_three_flows_two_resources() -> None:
    # r0 = 12 carries A, B; r1 = 9 carries B, C, D. r1's share 3 is the first bottleneck:
    # B, C, D get 3, A gets 12 - 3 = 9.
    rates = route_rates([route(0), route(0, 1), route(1), route(1)], [12.0, 9.0])
    assert rates == pytest.approx([9.0, 3.0, 3.0, 3.0])


def test_per_flow_cap() -> None:
    assert route_rates([route(0, cap=3.0), route(0)], [10.0]) == pytest.approx([3.0, 7.0])
    assert route_rates([route(0, cap=3.0), route(0, cap=3.0)], [10.0]) == pytest.approx([3.0, 3.0])
    assert route_rates([route(cap=4.0)], []) == pytest.approx([4.0])


def test_disjoint_flows_get_their_own_capacity() -> None:
    assert route_rates([route(0), route(1)], [3.0, 7.0]) == pytest.approx([3.0, 7.0])


def test_no_flows() -> None:
    assert route_rates([], [1.0]) == []


def test_uncapped_flow_on_no_resource_is_an_error() -> None:
    with pytest.raises(ValueError):
        route_rates([route()], [])


def test_max_min_rates_on_plain_flows() -> None:
    """The same progressive filling over (resources, per-flow cap) pairs."""
    assert max_min_rates([((0,), INF), ((0, 1), INF)], [10.0, 2.0]) == pytest.approx([8.0, 2.0])
    assert max_min_rates([((0,), 3.0), ((0,), INF), ((0,), INF)], [10.0]) == pytest.approx([3.0, 3.5, 3.5])
    # a cap above the fair share does not bind
    assert max_min_rates([((0,), 6.0), ((0,), INF)], [10.0]) == pytest.approx([5.0, 5.0])


def test_rates_never_exceed_capacity() -> None:
    flows = [((0, 1), INF), ((1, 2), 1.5), ((0, 2), INF), ((2,), INF), ((0,), 0.5)]
    capacities = [4.0, 3.0, 5.0]
    rates = max_min_rates(flows, capacities)
    for r, capacity in enumerate(capacities):
        assert sum(rate for (res, _), rate in zip(flows, rates) if r in res) <= capacity * (1 + 1e-12)
    # hand: flow 4 stops at its cap 0.5; then r1 (3) holds flows 0, 1 at 1.5 each (flow 1's cap too);
    # r2 has 5 - 1.5 = 3.5 left for flows 2 and 3: 1.75 each (r0 would allow flow 2 up to 2)
    assert rates == pytest.approx([1.5, 1.5, 1.75, 1.75, 0.5])


# -- hand-built clusters ------------------------------------------------------------------------
def host(name: str, region: str, uplink_gbit: float = 10.0) -> Host:
    return Host(name=name, region=region, interconnect=Interconnect.NVLINK, interconnect_bandwidth_bytes_per_s=150e9,
                interconnect_latency_s=5e-6, uplink_bandwidth_bytes_per_s=uplink_gbit * GBIT)


def two_hosts(latency_s: float, link_gbit: float, uplink_gbit: float = 10.0, gpus: int = 1) -> Cluster:
    """Hosts h0 (region a) and h1 (region b), ``gpus`` V100s each, one a–b link."""
    devices = tuple(Device(id=i, gpu="V100-SXM2-16GB", host=f"h{i // gpus}") for i in range(2 * gpus))
    return Cluster(name="pair", devices=devices, hosts=(host("h0", "a", uplink_gbit), host("h1", "b", uplink_gbit)),
                   links=(Link(a="a", b="b", latency_s=latency_s, bandwidth_bytes_per_s=link_gbit * GBIT),))


def transfer_s(cluster: Cluster, src: int, dst: int, size: float) -> float:
    topology = Topology(cluster)
    one = topology.route(src, dst)
    (rate,) = route_rates([one], topology.capacities)
    return one.latency_s + size / rate


def test_ring_allreduce_two_hosts_hand_formula() -> None:
    latency, size = 0.02, 64e6
    cluster = two_hosts(latency, link_gbit=1.0)
    rate = min(1.0 * GBIT * GOODPUT_FRACTION, 16 * RECEIVE_WINDOW_BYTES / (2 * latency))
    k = 2
    expected = 2 * (k - 1) * (latency + size / k / rate)
    assert ring_allreduce_s(Topology(cluster), [0, 1], size) == pytest.approx(expected, rel=1e-12)


def test_ring_allreduce_window_bound() -> None:
    """gloo's one connection carries at most its receive window per round trip."""
    latency, size = 0.1, 8e6
    cluster = two_hosts(latency, link_gbit=10.0)
    rate = RECEIVE_WINDOW_BYTES / (2 * latency)
    assert rate < 10 * GBIT * GOODPUT_FRACTION
    assert ring_allreduce_s(Topology(cluster, GLOO), [1, 0], size) == pytest.approx(2 * (latency + size / 2 / rate))


def test_ring_allreduce_four_hosts_in_a_ring() -> None:
    """Four single-GPU hosts in one region: each ring edge has its own egress, class and ingress."""
    latency, size, k = 0.001, 1e8, 4
    hosts = tuple(host(f"h{i}", "r", uplink_gbit=10.0) for i in range(k))
    devices = tuple(Device(id=i, gpu="V100-SXM2-16GB", host=f"h{i}") for i in range(k))
    cluster = Cluster(name="ring", devices=devices, hosts=hosts,
                      links=(Link(a="r", b="r", latency_s=latency, bandwidth_bytes_per_s=2 * GBIT),))
    rate = 2 * GBIT * GOODPUT_FRACTION
    expected = 2 * (k - 1) * (latency + size / k / rate)
    assert ring_allreduce_s(Topology(cluster), range(k), size) == pytest.approx(expected, rel=1e-12)


def test_ring_allreduce_of_one_is_free() -> None:
    assert ring_allreduce_s(Topology(two_hosts(0.01, 1.0)), [0], 1e9) == 0.0


def test_ring_over_nvlink() -> None:
    cluster = SCENARIOS["ondemand"].build()
    size = 8 * 2**20
    expected = 2 * 7 * (5e-6 + size / 8 / 150e9)
    assert ring_allreduce_s(Topology(cluster), range(8), size) == pytest.approx(expected, rel=1e-9)


# -- routes ---------------------------------------------------------------------------------------
def test_same_host_uses_the_gpu_interconnect() -> None:
    cluster = two_hosts(0.01, 1.0, gpus=2)
    topology = Topology(cluster)
    local, remote = topology.route(0, 1), topology.route(0, 2)
    assert local.latency_s == 5e-6
    assert math.isinf(local.flow_cap_bytes_per_s)
    assert [topology.capacities[r] for r in local.resources] == [150e9, 150e9]
    assert not set(local.resources) & set(remote.resources)  # no NIC on the NVLink path
    # two GPUs of one host sending to each other do not share a port
    assert not set(local.resources) & set(topology.route(1, 0).resources)


def test_cross_host_goodput_and_window_cap() -> None:
    latency = 0.05
    cluster = two_hosts(latency, link_gbit=1.0, uplink_gbit=10.0, gpus=2)
    topology = Topology(cluster)
    remote = topology.route(0, 3)
    assert remote.latency_s == latency
    assert remote.flow_cap_bytes_per_s == pytest.approx(16 * RECEIVE_WINDOW_BYTES / (2 * latency))  # NCCL's 16
    assert Topology(cluster, GLOO).route(0, 3).flow_cap_bytes_per_s == pytest.approx(RECEIVE_WINDOW_BYTES / (2 * latency))
    caps = sorted(topology.capacities[r] for r in remote.resources)
    assert caps == pytest.approx(sorted([10 * GBIT * GOODPUT_FRACTION, 1 * GBIT * GOODPUT_FRACTION,
                                         10 * GBIT * GOODPUT_FRACTION]))
    # both GPUs of h0 sending to h1 share the host's NIC and its egress class
    assert set(remote.resources) & set(topology.route(1, 2).resources)


def test_a_host_limits_each_connection() -> None:
    """AWS's 5 Gbit/s a connection binds gloo's one, not NCCL's sixteen."""
    limited = tuple(replace(h, connection_bandwidth_bytes_per_s=5 * GBIT) for h in two_hosts(1e-4, 10.0).hosts)
    cluster = replace(two_hosts(1e-4, 10.0), hosts=limited)
    assert Topology(cluster, GLOO).route(0, 1).flow_cap_bytes_per_s == pytest.approx(5 * GBIT * GOODPUT_FRACTION)
    assert Topology(cluster, NCCL).route(0, 1).flow_cap_bytes_per_s == pytest.approx(16 * 5 * GBIT * GOODPUT_FRACTION)


def test_two_flows_share_the_sender_egress_class() -> None:
    cluster = two_hosts(0.001, link_gbit=1.0, gpus=2)
    topology = Topology(cluster)
    rates = route_rates([topology.route(0, 2), topology.route(1, 3)], topology.capacities)
    assert rates == pytest.approx([0.5 * GBIT * GOODPUT_FRACTION] * 2)


def test_zero_latency_link_has_no_window_cap() -> None:
    assert math.isinf(Topology(two_hosts(0.0, 1.0)).route(0, 1).flow_cap_bytes_per_s)


def test_pair_form_uses_the_measured_figure() -> None:
    hosts = (host("h0", "x"), host("h1", "y"))
    devices = (Device(id=0, gpu="V100-SXM2-16GB", host="h0"), Device(id=1, gpu="V100-SXM2-16GB", host="h1"))
    cluster = Cluster(name="m", devices=devices, hosts=hosts, pair_latency_s=((0.0, 0.03), (0.04, 0.0)),
                      pair_bandwidth_bytes_per_s=((0.0, 1e8), (2e8, 0.0)))
    assert transfer_s(cluster, 0, 1, 1e8) == pytest.approx(0.03 + 1.0)
    assert transfer_s(cluster, 1, 0, 1e8) == pytest.approx(0.04 + 0.5)


def test_route_to_self_is_an_error() -> None:
    with pytest.raises(ValueError):
        Topology(two_hosts(0.01, 1.0)).route(1, 1)


def test_network_snapshot_holds_built_routes() -> None:
    topology = Topology(two_hosts(0.01, 1.0, gpus=2))
    topology.route(0, 1)
    network = topology.network()
    assert (0, 1) in network.routes and len(network.resource_names) == len(network.capacities_bytes_per_s)


# -- the constants reproduce docs/facts.md §2's two-p3.2xlarge measurements -----------------------------------
def test_goodput_is_jumbo_frames_payload() -> None:
    """8949 bytes of payload in a 9001-byte MTU frame, counted with its 14-byte Ethernet header."""
    assert GOODPUT_FRACTION == pytest.approx(8949 / 9015)


def test_rate_capped_transfer_takes_541_ms() -> None:
    """64 MiB through tc's 1 Gbit/s: docs/facts.md §2's 541 ms."""
    cluster = two_hosts(1e-9, link_gbit=1.0)
    assert transfer_s(cluster, 0, 1, 64 * 2**20) == pytest.approx(0.541, rel=1e-3)


def test_plain_transfer_takes_about_55_ms() -> None:
    cluster = two_hosts(1e-4, link_gbit=10.0)
    assert transfer_s(cluster, 0, 1, 64 * 2**20) == pytest.approx(0.055, rel=0.03)


def test_slow_start_is_free_where_the_initial_windows_fill_the_path() -> None:
    assert slow_start_s(64e6, 1e9, 1e-3, 16) == 0.0  # 1 MB in flight < 16 × 10 segments
    assert slow_start_s(64e6, 1e9, 0.0, 1) == 0.0


def test_slow_start_by_hand() -> None:
    """One connection, 8 initial windows fill the path: the window doubles 3 times in 3 round
    trips, sending (8 − 1) / ln 2 initial windows meanwhile; beyond that the rate."""
    rtt, rate = 0.01, 8 * INITIAL_WINDOW_BYTES / 0.01
    ramp_bytes = 7 * INITIAL_WINDOW_BYTES / math.log(2)
    assert slow_start_s(1e9, rate, rtt, 1) == pytest.approx(3 * rtt - ramp_bytes / rate)
    # done within the ramp: log2(1 + S ln2 / IW) round trips in all
    small = INITIAL_WINDOW_BYTES
    assert slow_start_s(small, rate, rtt, 1) == pytest.approx(rtt * math.log2(1 + math.log(2)) - small / rate)


def test_delayed_transfers_pay_slow_start_and_gloo_its_window() -> None:
    """docs/facts.md §2 / the p2p series: 64 MiB with 10 ms added delay, NCCL 113 ms; gloo is 2–5× slower."""
    size, latency = 64 * 2**20, 0.010
    for transport, measured in ((NCCL, 0.113), (GLOO, 0.532)):
        topology = Topology(two_hosts(latency, link_gbit=10.0), transport)
        route = topology.route(0, 1)
        (rate,) = route_rates([route], topology.capacities)
        seconds = latency + slow_start_s(size, rate, 2 * latency, transport.connections) + size / rate
        assert seconds == pytest.approx(measured, rel=0.06)
