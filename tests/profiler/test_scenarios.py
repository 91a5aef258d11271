"""The five scenarios against docs/facts.md §3, every figure converted by hand from Gbit/s and ms."""

from __future__ import annotations

from collections import Counter

import pytest

from profiler.errors import InputError
from profiler.scenarios import SCENARIOS, scenario

GBIT = 1e9 / 8  # bytes per second
MS = 1e-3
V100 = "V100-SXM2-16GB"


def gpus_per_host(name: str) -> Counter:
    """How many hosts have each GPU count."""
    cluster = SCENARIOS[name].build()
    return Counter(Counter(d.host for d in cluster.devices).values())


def gpus_per_region(name: str) -> dict[str, int]:
    cluster = SCENARIOS[name].build()
    return dict(Counter(cluster.region_of(d.id) for d in cluster.devices))


def link(name: str, a: str, b: str):
    return SCENARIOS[name].build().link(a, b)


def assert_link(name: str, a: str, b: str, ms: float, gbit: float) -> None:
    found = link(name, a, b)
    assert found.latency_s == pytest.approx(ms * MS, rel=1e-12)
    assert found.bandwidth_bytes_per_s == pytest.approx(gbit * GBIT, rel=1e-12)


def test_numbers_and_names() -> None:
    assert [(s.number, s.name) for s in SCENARIOS.values()] == [
        (1, "ondemand"), (2, "spot"), (3, "universities"), (4, "regional"), (5, "world")]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_has_64_v100(name: str) -> None:
    cluster = SCENARIOS[name].build()
    assert cluster.size == 64
    assert {d.gpu for d in cluster.devices} == {V100}
    assert [d.id for d in cluster.devices] == list(range(64))


def test_host_sizes() -> None:
    assert gpus_per_host("ondemand") == {8: 8}
    assert gpus_per_host("spot") == {4: 8, 1: 32}
    for name in ("universities", "regional", "world"):
        assert gpus_per_host(name) == {1: 64}, name


def test_region_sizes() -> None:
    assert gpus_per_region("ondemand") == {"datacenter": 64}
    assert gpus_per_region("spot") == {"datacenter": 64}
    assert gpus_per_region("universities") == {"ohio": 32, "virginia": 32}
    assert gpus_per_region("regional") == dict.fromkeys(("virginia", "oregon", "california", "ohio"), 16)
    assert gpus_per_region("world") == dict.fromkeys(
        ("oregon", "virginia", "ohio", "tokyo", "seoul", "london", "frankfurt", "ireland"), 8)


def test_datacenter_uplinks_and_nvlink() -> None:
    ondemand, spot = SCENARIOS["ondemand"].build(), SCENARIOS["spot"].build()
    assert {h.uplink_bandwidth_bytes_per_s for h in ondemand.hosts} == {25 * GBIT}
    assert {h.uplink_bandwidth_bytes_per_s for h in spot.hosts} == {10 * GBIT}
    # docs/facts.md §2: NVLink 2.0, 6 links × 25 GB/s per direction per GPU
    assert {h.interconnect_bandwidth_bytes_per_s for h in ondemand.hosts} == {150e9}
    assert link("ondemand", "datacenter", "datacenter").bandwidth_bytes_per_s == pytest.approx(25 * GBIT)
    assert link("ondemand", "datacenter", "datacenter").latency_s < 1 * MS  # "sub-millisecond"
    assert link("spot", "datacenter", "datacenter").bandwidth_bytes_per_s == pytest.approx(10 * GBIT)


def test_geo_hosts_are_p3_2xlarge() -> None:
    for name in ("universities", "regional", "world"):
        assert {h.uplink_bandwidth_bytes_per_s for h in SCENARIOS[name].build().hosts} == {10 * GBIT}


def test_universities_links() -> None:
    assert_link("universities", "ohio", "ohio", 1, 5)
    assert_link("universities", "virginia", "virginia", 1, 5)
    assert_link("universities", "ohio", "virginia", 11, 1.12)


@pytest.mark.parametrize("name", ["regional", "world"])
def test_within_region_is_the_tc_emulation(name: str) -> None:
    cluster = SCENARIOS[name].build()
    for region in cluster.regions:
        assert_link(name, region, region, 10, 2)


@pytest.mark.parametrize(("a", "b", "ms", "gbit"), [
    ("virginia", "oregon", 67, 1.15), ("virginia", "california", 59, 1.05), ("virginia", "ohio", 11, 1.12),
    ("oregon", "california", 12, 1.25), ("oregon", "ohio", 49, 1.10), ("california", "ohio", 52, 1.02)])
def test_regional_links(a: str, b: str, ms: float, gbit: float) -> None:
    assert_link("regional", a, b, ms, gbit)
    assert_link("regional", b, a, ms, gbit)


@pytest.mark.parametrize(("a", "b", "ms", "gbit"), [
    ("seoul", "london", 238, 0.342), ("oregon", "virginia", 67, 0.79), ("tokyo", "seoul", 34, 1.10),
    ("london", "ireland", 12, 1.09), ("ohio", "tokyo", 130, 0.694), ("frankfurt", "ireland", 24, 1.08),
    ("virginia", "london", 76, 1.16), ("seoul", "ireland", 228, 0.335), ("oregon", "frankfurt", 143, 0.404)])
def test_world_links(a: str, b: str, ms: float, gbit: float) -> None:
    assert_link("world", a, b, ms, gbit)
    assert_link("world", b, a, ms, gbit)


def test_world_seoul_london_in_si_units() -> None:
    found = link("world", "seoul", "london")
    assert found.latency_s == pytest.approx(0.238)
    assert found.bandwidth_bytes_per_s == pytest.approx(0.342e9 / 8)  # 42.75 MB/s


def test_world_has_every_pair_once() -> None:
    cluster = SCENARIOS["world"].build()
    assert len(cluster.links) == 8 + 8 * 7 // 2


def test_lookup_by_name_and_number() -> None:
    for item in SCENARIOS.values():
        assert scenario(item.name) is item
        assert scenario(str(item.number)) is item
    assert scenario("5").name == "world"
    assert scenario("2").name == "spot"


@pytest.mark.parametrize("name", ["mars", "0", "6", "", "World"])
def test_unknown_scenario(name: str) -> None:
    with pytest.raises(InputError, match="unknown case") as info:
        scenario(name)
    assert "world (5)" in str(info.value)
