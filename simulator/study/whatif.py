"""What-if questions as changed clusters, and the systems' predictions over a sweep of them: the
logic behind notebooks/what_if.ipynb, which only calls these and plots.

- ``scale_links``: the links between regions (or within them) ``bandwidth``× as fast and
  ``latency``× as long;
- ``spread``: the same devices in the first k cities of the world-wide case (docs/facts.md §3);
- ``upgrade``: the devices of some regions replaced by another GPU kind (datasheet model);
- ``systems`` / ``sweep``: Megatron-Optimal, Ours w/o scheduler (mean of the three seeds) and
  Ours w/ scheduler for each variant. The scheduler here is the deterministic search
  (scheduler.time_search) with layers per stage free (``--split uneven``) on every cluster, so
  a sweep that makes some GPUs faster compares like with like; `sim predict` and `sim report`
  balance layers only where the cluster mixes GPU kinds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.model import gpt3_xl
from profiler.scenarios import EXTRA_WAN_LINKS, GEO_WITHIN_REGION, WORLD_LINKS, geo
from scheduler.methods import SearchSettings
from simulator.outputs.render import SYSTEM_TITLES, align
from simulator.study.table import predict_table

WORLD_CITIES = ("oregon", "virginia", "ohio", "tokyo", "seoul", "london", "frankfurt", "ireland")  # case 5's order
SWEEP_SYSTEMS = ("megatron_optimal", "ours_random", "ours_scheduled")


@dataclass(frozen=True, slots=True)
class Point:
    """One system's prediction at one value of a swept quantity."""

    x: float
    system: str
    iteration_s: float | None  # None: does not fit in memory
    config: str | None = None


def scale_links(cluster: Cluster, *, bandwidth: float = 1.0, latency: float = 1.0,
                between_regions: bool = True) -> Cluster:
    """The cluster with its links between regions (``between_regions=False``: within them)
    scaled: bandwidth × ``bandwidth``, latency × ``latency``."""
    if bandwidth <= 0 or latency <= 0:
        raise InputError(f"scale factors must be positive, got bandwidth {bandwidth}, latency {latency}")
    if cluster.pair_latency_s is not None:
        raise InputError(f"cluster {cluster.name!r} gives per-device matrices: scale_links scales region links")
    links = tuple(replace(link, bandwidth_bytes_per_s=link.bandwidth_bytes_per_s * bandwidth,
                          latency_s=link.latency_s * latency)
                  if (link.a != link.b) == between_regions else link for link in cluster.links)
    return replace(cluster, name=f"{cluster.name} (links ×{bandwidth:g} bandwidth, ×{latency:g} latency)",
                   links=links)


def spread(regions: int, devices: int = 64) -> Cluster:
    """``devices`` single-V100 instances split evenly over the first ``regions`` cities of the
    world-wide case, with its links (docs/facts.md §3)."""
    if not 1 <= regions <= len(WORLD_CITIES) or devices % regions:
        raise InputError(f"spread: {devices} devices do not split evenly over {regions} of "
                         f"{len(WORLD_CITIES)} cities")
    cities = WORLD_CITIES[:regions]
    between = {pair: link for pair, link in {**WORLD_LINKS, **EXTRA_WAN_LINKS}.items() if set(pair) <= set(cities)}
    return geo(f"world, {regions} regions", {c: devices // regions for c in cities}, GEO_WITHIN_REGION, between)


def upgrade(cluster: Cluster, regions: Iterable[str], gpu: str = "A100-40GB") -> Cluster:
    """Every device of ``regions`` replaced by ``gpu`` (its datasheet model; the hosts' network
    stays as it was)."""
    regions = set(regions)
    unknown = regions - set(cluster.regions)
    if unknown:
        raise InputError(f"upgrade: cluster {cluster.name!r} has no region {', '.join(sorted(unknown))}")
    devices = tuple(replace(d, gpu=gpu) if cluster.region_of(d.id) in regions else d for d in cluster.devices)
    return replace(cluster, name=f"{cluster.name} ({gpu} in {', '.join(sorted(regions))})", devices=devices)


def gpus(cluster: Cluster, kind: str) -> int:
    return sum(d.gpu == kind for d in cluster.devices)


def systems(cluster: Cluster, layers: int = 24, batch: int = 1024,
            max_evaluations: int = 100) -> dict[str, Point]:
    """Megatron-Optimal, Ours w/o scheduler and Ours w/ scheduler on ``cluster`` for GPT3-XL
    (analytic estimator), keyed by system, with x = 0; the scheduler's local search gets
    ``max_evaluations`` estimator calls. Remembered by what the cluster is, not by its name: a
    sweep's point at the baseline is computed once."""
    return dict(_systems(replace(cluster, name=""), layers, batch, max_evaluations))


@functools.lru_cache(maxsize=64)
def _systems(cluster: Cluster, layers: int, batch: int, max_evaluations: int) -> tuple[tuple[str, Point], ...]:
    search = SearchSettings(uneven=True, deterministic=True, max_evaluations=max_evaluations)
    row = predict_table(cluster, "what-if", gpt3_xl, [layers], [batch], search=search).rows[0]
    return tuple((key, Point(x=0.0, system=key, iteration_s=result.iteration_s, config=result.config))
                 for key, result in row.systems.items() if key in SWEEP_SYSTEMS)


def sweep(variants: Iterable[tuple[float, Cluster]], layers: int = 24, batch: int = 1024,
          max_evaluations: int = 100, progress: Callable[[str], None] | None = None) -> list[Point]:
    """``systems`` at each (x, cluster), as one list of points."""
    points = []
    for x, cluster in variants:
        if progress:
            progress(f"{cluster.name}")
        points += [replace(p, x=x) for p in systems(cluster, layers, batch, max_evaluations).values()]
    return points


def table(points: list[Point], x_title: str) -> str:
    """An aligned text table: one row per x, each system's seconds per iteration, the best of a
    row marked *."""
    keys = [k for k in SWEEP_SYSTEMS if any(p.system == k for p in points)]
    rows = [[x_title] + [SYSTEM_TITLES[k] for k in keys]]
    for x in sorted({p.x for p in points}):
        at = {p.system: p for p in points if p.x == x}
        values = [at[k].iteration_s for k in keys if k in at and at[k].iteration_s is not None]
        best = min(values, default=None)
        cells = []
        for key in keys:
            point = at.get(key)
            if point is None or point.iteration_s is None:
                cells.append("-" if point is None else "OOM")
            else:
                cells.append(f"{point.iteration_s:.2f}" + (" *" if point.iteration_s <= best else ""))
        rows.append([f"{x:g}"] + cells)
    return align(rows, left=1)
