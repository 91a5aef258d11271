"""`profiler network`'s pure part: which rank pairs measure together, how a message-size sweep
becomes latency + size / bandwidth, and how the measurements become a cluster file (the per-pair
matrix form, which `sim predict --cluster` reads as it is)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from profiler.cluster import CLUSTER_SCHEMA, Cluster
from profiler.errors import InputError
from profiler.files import read_json

DEFAULT_SIZES = tuple(4096 * 4**k for k in range(7))  # 4 KiB .. 16 MiB: latency-bound to bandwidth-bound


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkFit:
    latency_s: float
    bandwidth_bytes_per_s: float
    residual: float  # root mean square of (fit − measured) / measured over the sizes


def tournament(ranks: int) -> list[list[tuple[int, int]]]:
    """Rounds of disjoint pairs covering every pair once (the circle method of a round-robin
    tournament): ranks − 1 rounds, or ranks with an odd count, each rank in at most one pair."""
    players: list[int | None] = list(range(ranks)) + ([None] if ranks % 2 else [])
    rounds = []
    for _ in range(len(players) - 1):
        half = len(players) // 2
        pairs = [(players[i], players[-1 - i]) for i in range(half)]
        rounds.append(sorted((min(a, b), max(a, b)) for a, b in pairs if a is not None and b is not None))
        players = [players[0], players[-1], *players[1:-1]]
    return rounds


def fit_link(sizes_bytes: list[int], seconds: list[float]) -> LinkFit:
    """Least squares of one-way times against latency + size / bandwidth, each point weighted by
    1 / its time, so the relative errors count (timing noise is a share of the time, and the small
    sizes that fix the latency would otherwise weigh nothing beside the large ones). The fit's
    intercept may come out below zero on a fast link: latency is then the smallest time measured,
    never negative."""
    sizes, times = np.asarray(sizes_bytes, dtype=float), np.asarray(seconds, dtype=float)
    if len(sizes) < 2 or np.ptp(sizes) == 0:
        raise InputError("a link fit needs at least two different message sizes")
    slope, intercept = np.polyfit(sizes, times, 1, w=1.0 / times)
    if slope <= 0:  # time does not grow with size: the sweep saw only latency
        slope = max(float(np.max(times - times.min()) / np.ptp(sizes)), 1e-15)
    latency = float(intercept) if intercept > 0 else float(times.min())
    fitted = latency + slope * sizes
    residual = float(np.sqrt(np.mean(((fitted - times) / times) ** 2)))
    return LinkFit(latency_s=latency, bandwidth_bytes_per_s=float(1.0 / slope), residual=residual)


def read_regions(path: Path) -> dict[str, str]:
    doc = read_json(path, "regions file")
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in doc.items()):
        raise InputError(f"{path}: expected a JSON object of host name -> region name")
    return doc


def cluster_document(*, name: str, hosts: list[str], kinds: list[str], fits: dict[tuple[int, int], LinkFit],
                     regions: dict[str, str], measured: dict[str, Any]) -> dict[str, Any]:
    """The cluster JSON of ranks 0..N-1 (rank = device id) on their hosts, with the measured
    per-pair matrices (a pair's fit both ways). A host's interconnect is the fastest pair measured
    inside it and its uplink the fastest pair measured leaving it (the NIC carries at least that);
    a host with nothing to measure takes the fastest pair of the cluster."""
    n = len(hosts)
    missing = sorted(set(hosts) - set(regions)) if regions else []
    if missing:
        raise InputError(f"--regions names no region for host(s) {', '.join(missing)}")
    latency, bandwidth = np.zeros((n, n)), np.zeros((n, n))
    for (a, b), fit in fits.items():
        latency[a, b] = latency[b, a] = fit.latency_s
        bandwidth[a, b] = bandwidth[b, a] = fit.bandwidth_bytes_per_s
    fastest = float(bandwidth.max())
    host_docs = []
    for host in dict.fromkeys(hosts):
        mine = [i for i in range(n) if hosts[i] == host]
        inside = [(a, b) for a in mine for b in mine if a != b]
        leaving = [(a, b) for a in mine for b in range(n) if hosts[b] != host]
        host_docs.append({"name": host, "region": regions.get(host, host), "interconnect": "pcie",
                          "interconnect_bandwidth_bytes_per_s": max((bandwidth[p] for p in inside), default=fastest),
                          "interconnect_latency_s": min((latency[p] for p in inside), default=0.0),
                          "uplink_bandwidth_bytes_per_s": max((bandwidth[p] for p in leaving), default=fastest)})
    doc = {"schema": CLUSTER_SCHEMA, "name": name, "hosts": host_docs,
           "devices": [{"id": i, "gpu": kinds[i], "host": hosts[i]} for i in range(n)], "links": [],
           "latency_s": latency.tolist(), "bandwidth_bytes_per_s": bandwidth.tolist(),
           "measured": measured | {"fit_residual": [[fits[min(a, b), max(a, b)].residual if a != b else 0.0
                                                     for b in range(n)] for a in range(n)]}}
    Cluster.from_json(doc, where=f"measured cluster {name!r}")  # what we write must load
    return doc
