"""Builders the tests share, as fixtures: small CPU clusters and profiles, random communication tables, and the brute-force partitions the solvers are checked
against."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from profiler.cluster import Cluster, Device, Host, Interconnect, Link
from profiler.model import gpt_small
from profiler.profile import Measured, Profile, Timing
from scheduler.comm_cost import CommTables


@pytest.fixture(autouse=True)
def _own_plan_cache(tmp_path_factory, monkeypatch):
    """Each test its own plan cache (simulator.plan_cache), empty and outside its tmp_path: no
    test answers from another's searches, nor from the user's."""
    monkeypatch.setenv("TASKLET_CACHE", str(tmp_path_factory.mktemp("plan-cache")))


def _cpu_cluster(devices: int = 4, *, hosts: int = 1, regions: int = 1, cores: int | None = 2,
                 latency_s: float = 1e-3, bandwidth_bytes_per_s: float = 1e9) -> Cluster:
    """``devices`` CPU ranks round-robin over ``hosts`` (one: "local", with ``cores``), the hosts
    round-robin over ``regions`` ("here", or r0, r1, ...), every pair of regions (and a region
    with itself) joined by one link of ``latency_s`` and ``bandwidth_bytes_per_s``."""
    names = ["local"] if hosts == 1 else [f"h{i}" for i in range(hosts)]
    region_names = ["here"] if regions == 1 else [f"r{i}" for i in range(regions)]
    host_list = tuple(Host(name=name, region=region_names[i % regions], interconnect=Interconnect.PCIE,
                           interconnect_bandwidth_bytes_per_s=1e10, interconnect_latency_s=1e-5,
                           uplink_bandwidth_bytes_per_s=1e9, cpu_cores=cores) for i, name in enumerate(names))
    pairs = [(a, b) for i, a in enumerate(region_names) for b in region_names[i + (regions > 1):]] if hosts > 1 else []
    return Cluster(name="cpu", hosts=host_list,
                   devices=tuple(Device(id=i, gpu="CPU", host=names[i % hosts]) for i in range(devices)),
                   links=tuple(Link(a=a, b=b, latency_s=latency_s, bandwidth_bytes_per_s=bandwidth_bytes_per_s)
                               for a, b in pairs))


@pytest.fixture(scope="session")
def cpu_cluster():
    """``cpu_cluster(devices, hosts=, regions=, cores=, latency_s=, bandwidth_bytes_per_s=)``."""
    return _cpu_cluster


def _cpu_profile(threads: int = 1, dropout: float = 0.0) -> Profile:
    """gpt-small on a CPU: forward 20 ms a layer, backward 33 ms, recompute 21 ms (about what
    `profiler compute --threads 1` measures on this project's machine), at tp 1 and 2."""
    def part(tp: int, forward_s: float, backward_s: float, recompute_s: float | None) -> Measured:
        t = lambda s: Timing(median_s=s, spread_s=0.0)  # noqa: E731
        return Measured(tp=tp, micro_batch=1, forward=t(forward_s), backward=t(backward_s),
                        recompute=None if recompute_s is None else t(recompute_s), peak_memory_bytes=10**6)
    model = gpt_small()
    shape = {key: getattr(model, key) for key in ("d_model", "heads", "ffn", "seq_len", "vocab")}
    return Profile(device_kind="CPU", device_name="test cpu", memory_bytes=24e9, torch_version="2.13.0",
                   threads=threads, dtype="fp32", host="here", date="2026-11-27T00:00:00+00:00", warmup=1, repeats=3,
                   shape=shape, layers=(part(1, 0.020, 0.033, 0.021), part(2, 0.011, 0.018, 0.011)),
                   embedding=(part(1, 0.001, 0.004, None), part(2, 0.001, 0.002, None)),
                   head=(part(1, 0.016, 0.030, None), part(2, 0.009, 0.016, None)),
                   optimizer_s_per_param_byte=8e-11, dropout=dropout)


@pytest.fixture(scope="session")
def cpu_profile():
    """``cpu_profile(threads=1, dropout=0.0)``: a gpt-small CPU profile with fixed timings."""
    return _cpu_profile


def _random_tables(n: int, seed: int) -> CommTables:
    """Symmetric latencies in [1, 100] ms and bandwidths in [0.1, 1] GB/s between n devices."""
    rng = np.random.default_rng(seed)
    latency = rng.uniform(1e-3, 0.1, (n, n))
    bandwidth = rng.uniform(1e8, 1e9, (n, n))
    latency, bandwidth = (latency + latency.T) / 2, (bandwidth + bandwidth.T) / 2
    np.fill_diagonal(latency, 0.0)
    np.fill_diagonal(bandwidth, np.inf)
    return CommTables(latency_s=latency, bandwidth_bytes_per_s=bandwidth)


@pytest.fixture(scope="session")
def random_tables():
    """``random_tables(n, seed)``: random communication tables of n devices."""
    return _random_tables


def _balanced_partitions(devices: list[int], size: int):
    """Every partition of ``devices`` into groups of ``size``, each once (unordered groups: the
    lowest free device leads a group)."""
    if not devices:
        yield []
        return
    first, rest = devices[0], devices[1:]
    for mates in combinations(rest, size - 1):
        left = [d for d in rest if d not in mates]
        for tail in _balanced_partitions(left, size):
            yield [[first, *mates], *tail]


@pytest.fixture(scope="session")
def balanced_partitions():
    """``balanced_partitions(devices, size)``: every partition into groups of ``size``."""
    return _balanced_partitions
