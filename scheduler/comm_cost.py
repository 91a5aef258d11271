"""The study's communication cost model (docs/facts.md §5), as pure functions over cost tables.

Devices are split into D_PP groups of D_DP (each group = one stage's replicas).
- DataPCost: max over groups and their devices d of Σ over peers d' of 2·(α[d,d'] + c_dp / (D_DP·β[d,d'])).
- Between two groups: the cheapest perfect matching of their devices under the bottleneck (max)
  edge cost α + c_pp / β. PipelinePCost: the cheapest open path visiting every group once over
  those matching costs.
- Objective: DataPCost + 2·PipelinePCost (activations forward, their gradients backward).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from profiler.cluster import Cluster


@dataclass(frozen=True, slots=True, kw_only=True)
class CommTables:
    """α (s) and β (bytes/s) between every pair of devices, as the study's scheduler saw them:
    nominal link figures, no TCP corrections."""

    latency_s: np.ndarray
    bandwidth_bytes_per_s: np.ndarray

    def __post_init__(self) -> None:
        n = self.latency_s.shape[0]
        if self.latency_s.shape != (n, n) or self.bandwidth_bytes_per_s.shape != (n, n):
            raise ValueError("latency and bandwidth tables must be square and of one size")

    @property
    def size(self) -> int:
        return self.latency_s.shape[0]


def comm_tables(cluster: Cluster) -> CommTables:
    """Tables from a cluster: the per-pair matrices where given; else the GPU interconnect inside
    a host and the region link between hosts."""
    if cluster.pair_latency_s is not None:
        return CommTables(latency_s=np.array(cluster.pair_latency_s, dtype=float),
                          bandwidth_bytes_per_s=np.array(cluster.pair_bandwidth_bytes_per_s, dtype=float))
    hosts = {host.name: host for host in cluster.hosts}
    host_of = [hosts[d.host] for d in cluster.devices]
    regions = list(dict.fromkeys(h.region for h in host_of))
    region = np.array([regions.index(h.region) for h in host_of])
    link_latency, link_bandwidth = np.zeros((len(regions),) * 2), np.zeros((len(regions),) * 2)
    hosts_in = {r: {h.name for h in host_of if h.region == r} for r in regions}
    for a, ra in enumerate(regions):
        for b, rb in enumerate(regions):
            if a != b or len(hosts_in[ra]) > 1:  # a region of one host needs no link to itself
                link = cluster.link(ra, rb)
                link_latency[a, b], link_bandwidth[a, b] = link.latency_s, link.bandwidth_bytes_per_s
    latency, bandwidth = link_latency[np.ix_(region, region)], link_bandwidth[np.ix_(region, region)]
    names = np.array([d.host for d in cluster.devices])
    for name in dict.fromkeys(names):
        inside = np.flatnonzero(names == name)
        host = hosts[name]
        block = np.ix_(inside, inside)
        latency[block] = host.interconnect_latency_s
        bandwidth[block] = host.pair_bandwidth_bytes_per_s or host.interconnect_bandwidth_bytes_per_s
    np.fill_diagonal(latency, 0.0)
    np.fill_diagonal(bandwidth, np.inf)
    return CommTables(latency_s=latency, bandwidth_bytes_per_s=bandwidth)


def data_cost(groups: list[list[int]], tables: CommTables, dp_bytes: float) -> float:
    """DataPCost of a partition into groups of equal size."""
    worst = 0.0
    for group in groups:
        k = len(group)
        index = np.array(group)
        alpha = tables.latency_s[np.ix_(index, index)]
        beta = tables.bandwidth_bytes_per_s[np.ix_(index, index)]
        with np.errstate(divide="ignore"):
            edge = 2 * (alpha + dp_bytes / (k * beta))
        np.fill_diagonal(edge, 0.0)
        worst = max(worst, float(edge.sum(axis=1).max()))
    return worst


def _perfect_matching(allowed: np.ndarray) -> list[int] | None:
    """Kuhn's augmenting paths on a k×k boolean matrix: right partner of each left vertex, or None."""
    k = allowed.shape[0]
    match = [-1] * k  # right vertex -> left vertex

    def augment(left: int, seen: list[bool]) -> bool:
        for right in np.flatnonzero(allowed[left]):
            if not seen[right]:
                seen[right] = True
                if match[right] < 0 or augment(match[right], seen):
                    match[right] = left
                    return True
        return False

    if not all(augment(left, [False] * k) for left in range(k)):
        return None
    partner = [0] * k
    for right, left in enumerate(match):
        partner[left] = right
    return partner


def bottleneck_matching(a: list[int], b: list[int], tables: CommTables, pp_bytes: float) -> tuple[float, list[int]]:
    """The bottleneck perfect matching between two groups: the smallest t such that every device
    of ``a`` can be paired with its own device of ``b`` over edges costing at most t, and such a
    pairing (the partner of a[i] is b[partner[i]])."""
    ia, ib = np.array(a), np.array(b)
    return bottleneck_of(tables.latency_s[np.ix_(ia, ib)] + pp_bytes / tables.bandwidth_bytes_per_s[np.ix_(ia, ib)])


def bottleneck_of(edge: np.ndarray) -> tuple[float, list[int]]:
    """bottleneck_matching over a square cost matrix: its value and a matching that attains it."""
    values = np.unique(edge)
    low, high = 0, len(values) - 1
    while low < high:  # the answer is one of the edge costs: bisect over them
        mid = (low + high) // 2
        if _perfect_matching(edge <= values[mid]) is not None:
            high = mid
        else:
            low = mid + 1
    return float(values[low]), _perfect_matching(edge <= values[low])


def matching_cost(a: list[int], b: list[int], tables: CommTables, pp_bytes: float) -> float:
    return bottleneck_matching(a, b, tables, pp_bytes)[0]


def open_path_cost(weights: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Cheapest path visiting every node once (open-loop TSP), by dynamic programming over subsets
    (Held-Karp), and the path. Ties go to the lexicographically smallest path."""
    n = weights.shape[0]
    if n == 1:
        return 0.0, (0,)
    best: dict[tuple[int, int], tuple[float, tuple[int, ...]]] = {(1 << i, i): (0.0, (i,)) for i in range(n)}
    for size in range(2, n + 1):
        for subset in combinations(range(n), size):
            mask = sum(1 << i for i in subset)
            for last in subset:
                prev_mask = mask & ~(1 << last)
                options = [(best[prev_mask, j][0] + weights[j, last], best[prev_mask, j][1] + (last,))
                           for j in subset if j != last]
                best[mask, last] = min(options)
    full = (1 << n) - 1
    return min(best[full, last] for last in range(n))


def pipeline_cost(groups: list[list[int]], tables: CommTables, pp_bytes: float) -> tuple[float, tuple[int, ...]]:
    """PipelinePCost and the order of groups along the pipeline that achieves it."""
    n = len(groups)
    weights = np.zeros((n, n))
    for i, j in combinations(range(n), 2):
        weights[i, j] = weights[j, i] = matching_cost(groups[i], groups[j], tables, pp_bytes)
    return open_path_cost(weights)


def comm_objective(groups: list[list[int]], tables: CommTables, dp_bytes: float, pp_bytes: float) -> float:
    """The study's objective: DataPCost + 2·PipelinePCost (docs/facts.md §5)."""
    return data_cost(groups, tables, dp_bytes) + 2 * pipeline_cost(groups, tables, pp_bytes)[0]


def pipelines_of(groups: list[list[int]], tables: CommTables, pp_bytes: float) -> list[list[int]]:
    """Turn a partition into stages × replicas: groups in the order of the cheapest open path,
    and each replica's device in the next stage its bottleneck-matching partner."""
    _, order = pipeline_cost(groups, tables, pp_bytes)
    return chain_pipelines([groups[i] for i in order], tables, pp_bytes)


def chain_pipelines(ordered: list[list[int]], tables: CommTables, pp_bytes: float) -> list[list[int]]:
    """Stage groups already in pipeline order to stages × replicas: replica r's device in each
    next stage is the bottleneck-matching partner of its device in the stage before."""
    stages = [list(ordered[0])]
    for nxt in ordered[1:]:
        _, partner = bottleneck_matching(stages[-1], nxt, tables, pp_bytes)
        stages.append([nxt[partner[i]] for i in range(len(partner))])
    return stages
