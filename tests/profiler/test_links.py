"""profiler network's pure part: the tournament, the link fit, the cluster file it writes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.links import DEFAULT_SIZES, LinkFit, cluster_document, fit_link, tournament


@pytest.mark.parametrize("ranks", [2, 3, 4, 7, 8, 64])
def test_the_tournament_meets_every_pair_once_in_disjoint_rounds(ranks) -> None:
    rounds = tournament(ranks)
    assert len(rounds) == (ranks - 1 if ranks % 2 == 0 else ranks)
    met = [pair for pairs in rounds for pair in pairs]
    assert sorted(met) == list(itertools.combinations(range(ranks), 2))
    for pairs in rounds:
        busy = [rank for pair in pairs for rank in pair]
        assert len(busy) == len(set(busy))


@pytest.mark.parametrize("latency_s,bandwidth", [(5e-6, 10e9), (0.011, 1.12e9 / 8), (0.143, 0.404e9 / 8)])
def test_the_fit_recovers_latency_and_bandwidth_of_noisy_measurements(latency_s, bandwidth) -> None:
    rng = np.random.default_rng(0)
    sizes = list(DEFAULT_SIZES)
    seconds = [(latency_s + s / bandwidth) * (1 + rng.normal(0, 0.01)) for s in sizes]
    fit = fit_link(sizes, seconds)
    assert fit.bandwidth_bytes_per_s == pytest.approx(bandwidth, rel=0.03)
    assert fit.latency_s == pytest.approx(latency_s, rel=0.2, abs=2e-5)
    assert 0 < fit.residual < 0.05


def test_a_fit_never_gives_a_negative_latency_and_needs_two_sizes() -> None:
    fit = fit_link([1000, 2000, 4000], [1.0e-6, 1.9e-6, 4.2e-6])  # intercept below zero
    assert fit.latency_s == 1.0e-6 and fit.bandwidth_bytes_per_s > 0
    with pytest.raises(InputError, match="two different message sizes"):
        fit_link([1000, 1000], [1e-3, 1e-3])


def test_the_cluster_file_loads_with_the_matrices_measured() -> None:
    fits = {(0, 1): LinkFit(latency_s=1e-5, bandwidth_bytes_per_s=5e9, residual=0.01),
            (0, 2): LinkFit(latency_s=0.02, bandwidth_bytes_per_s=1e8, residual=0.02),
            (1, 2): LinkFit(latency_s=0.021, bandwidth_bytes_per_s=1.1e8, residual=0.03)}
    doc = cluster_document(name="m", hosts=["a", "a", "b"], kinds=["CPU"] * 3, fits=fits,
                           regions={"a": "ohio", "b": "virginia"}, measured={"tool": "test"})
    cluster = Cluster.from_json(doc)
    assert cluster.pair_latency_s[2][0] == 0.02 and cluster.pair_bandwidth_bytes_per_s[1][2] == 1.1e8
    assert [h.region for h in cluster.hosts] == ["ohio", "virginia"]
    a, b = cluster.hosts
    assert a.interconnect_bandwidth_bytes_per_s == 5e9 and a.uplink_bandwidth_bytes_per_s == 1.1e8
    assert doc["measured"]["fit_residual"][2][1] == 0.03
    with pytest.raises(InputError, match="no region for host"):
        cluster_document(name="m", hosts=["a", "a", "b"], kinds=["CPU"] * 3, fits=fits, regions={"a": "ohio"},
                         measured={})
