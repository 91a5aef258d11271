"""Speed of `sim predict` and of the SimPy engine on the study's workload.

Run as ``python benchmarks/bench_predict.py``. Figures (seconds, best of 3 where cheap):
- the full 9-row `sim predict --case world` table (analytic estimator for every cell);
- one SimPy iteration of 64 devices with 4,096 micro-batches in all (world case, the study's
  runtime on a random placement: 8 stages × 8 replicas × 512 micro-batches), with modelled
  operations per second;
- one SimPy iteration of 512 devices: the world case with 64 GPUs per city, 8 stages × 64
  replicas, batch 4,096.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiler.model import TrainingSpec, gpt3_xl  # noqa: E402
from profiler.network.topology import Topology  # noqa: E402
from profiler.scenarios import GEO_WITHIN_REGION, WORLD_LINKS, geo, world  # noqa: E402
from scheduler.layouts import random_layout  # noqa: E402
from simulator.cost.job import Job  # noqa: E402
from simulator.estimator.blocking import schedule_ends  # noqa: E402
from simulator.predict import predict  # noqa: E402
from simulator.study.table import predict_table  # noqa: E402


def best_of(runs: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def table_world() -> None:
    def table():
        schedule_ends.cache_clear()  # time the work, not the cache of a previous repetition
        return predict_table(world(), "world", gpt3_xl, [24, 32, 40], [1024, 2048, 4096])

    seconds, _ = best_of(3, table)
    print(f"sim predict --case world, 9 rows (analytic): {seconds:.2f} s (target < 30 s)")


def simpy_once(cluster, batch: int, runs: int, label: str, target: str) -> None:
    job = Job(cluster=cluster, model=gpt3_xl(24), training=TrainingSpec(global_batch=batch))
    placement = random_layout(cluster.size, 24, 8, cluster.size // 8, seed=0)
    topology = Topology(cluster)
    seconds, (prediction, _) = best_of(runs, lambda: predict(job, placement, engine="simpy", topology=topology))
    ops = prediction.operations
    print(f"{label}: {seconds:.2f} s (target {target}), {ops} modelled operations, "
          f"{ops / seconds:,.0f} operations/s, iteration {prediction.iteration_s:.2f} s")


def main() -> None:
    table_world()
    simpy_once(world(), 4096, 3, "SimPy, 64 devices, 4,096 micro-batches", "< 2 s")
    regions = {r: 64 for r in ("oregon", "virginia", "ohio", "tokyo", "seoul", "london", "frankfurt", "ireland")}
    big = geo("world-512", regions, GEO_WITHIN_REGION, WORLD_LINKS)
    simpy_once(big, 4096, 1, "SimPy, 512 devices, batch 4,096", "< 20 s")


if __name__ == "__main__":
    main()
