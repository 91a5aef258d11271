"""The scheduler's targets (issue 3), measured. Run as ``python benchmarks/bench_scheduler.py
[section ...]`` with sections ``study``, ``gaps``, ``random``, ``scale``, ``thorough``, ``mixed``, ``ga``,
``split``, ``table`` (default: all).

- study: the study's cost model (docs/facts.md §5: D_DP = D_PP = 8, c_dp = 0.65e9 B, c_pp = 0.471e9 B)
  on universities, regional and world, by the ilp method, with the study's matrices (5 ms inside
  a region) and with the emulation's (10 ms): cost, proven bound, gap, seconds;
- gaps: the time objective with `sim plan`'s default 60 s on the five built-in cases (24 layers,
  batch 1024): iteration seconds, proven bound, gap, seconds;
- random: the time objective on every built-in case and setting, `sim predict`'s "Ours w/
  scheduler" (ilp, 5 s a row) against "Ours w/o scheduler" (mean of 3 random placements), gaps,
  and the seconds of the whole `sim predict --case world` table;
- scale: world-like clusters of 256 and 1,024 devices (32 / 128 GPUs per city), time objective,
  `sim plan --time-limit` 60 s and 300 s (the targets): seconds, gap, peak memory of the process;
- thorough: what a longer limit proves where the plain bound MILP is solved early and the
  sharper terms get the rest (scheduler.time_bound.SHARPER_MIN_S): the world table's two rows
  it cannot prove in 20 s (32 and 40 layers, batch 1,024) with `sim plan --time-limit 300`, and
  256 devices with 400 s;
- mixed: 32 V100 + 16 A100 + 16 RTX 4090 in three regions (examples/mixed-gpus-cluster.json):
  the best even split against the uneven one;
- ga: the study's evolutionary search (full size: 100 + 4,900) on the comm objective;
- split: whose is the gap on spot, the search's or the bound's: `sim predict`'s 5 s and 400
  local-search evaluations against 60 s and 5,000, on spot (24 layers, batch 1024, P8D8) and on a
  16-device spot of 2 p3.8xlarge and 8 p3.2xlarge (8 layers, batch 256, P4D4): a longer search
  that finds no faster plan leaves the gap to the bound;
- table: the README's main command, `sim predict --case spot`, run whole as a new user runs it
  (a fresh process with an empty plan cache: imports, the nine rows, the table) with its
  default 1 s a row, its seconds and each row's gap, then once more from the cache it left; the
  same for `--case world`, and world again with 20 s a row.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiler.cluster import Cluster, load_cluster  # noqa: E402
from profiler.model import TrainingSpec, gpt3_xl  # noqa: E402
from profiler.scenarios import GEO_WITHIN_REGION, SCENARIOS, WORLD_LINKS, geo, scheduler_matrices  # noqa: E402
from scheduler.comm_cost import comm_tables  # noqa: E402
from scheduler.ilp import comm_ilp  # noqa: E402
from scheduler.methods import SearchSettings, plan_search  # noqa: E402
from scheduler.search import Problem, derived_bytes  # noqa: E402
from simulator.planning import evaluator, time_bound_inputs  # noqa: E402
from simulator.study.table import predict_table, scheduler_settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = {"universities": 16.09, "regional": 34.80, "world": 49.22}  # docs/facts.md §5


def study() -> None:
    print("## study's cost model, ilp (HiGHS), gap tolerance 1%")
    print("case          matrices  cost     bound    gap     seconds  published")
    for name, published in PUBLISHED.items():
        for label, cluster in (("study", scheduler_matrices(name)), ("tc-10ms", SCENARIOS[name].build())):
            problem = Problem(device_count=64, layers=24, pp=8, dp=8, tables=comm_tables(cluster),
                              dp_bytes=0.65e9, pp_bytes=0.471e9)
            start = time.perf_counter()
            result = comm_ilp(problem, time_limit_s=60, gap=0.01)
            print(f"{name:<13} {label:<9} {result.value:7.3f}  {result.bound:7.3f}  {result.gap:6.2%}  "
                  f"{time.perf_counter() - start:7.2f}  {published}")


def versus_random() -> None:
    print("## time objective: Ours w/ scheduler (ilp, 5 s a row) vs w/o (mean of 3 random)")
    print("case          layers batch  scheduled  random    gap    ratio")
    worst_gap, wins, rows = 0.0, 0, 0
    for name, item in SCENARIOS.items():
        start = time.perf_counter()
        cluster = item.build()
        table = predict_table(cluster, name, gpt3_xl, [24, 32, 40], [1024, 2048, 4096],
                              search=scheduler_settings(cluster, time_limit_s=5.0))
        seconds = time.perf_counter() - start
        for row in table.rows:
            ours, rand = row.systems.get("ours_scheduled"), row.systems.get("ours_random")
            if ours is None or ours.iteration_s is None or rand.iteration_s is None:
                print(f"{name:<13} {row.layers:>6} {row.batch:>5}  OOM")
                continue
            rows += 1
            wins += ours.iteration_s <= rand.iteration_s
            worst_gap = max(worst_gap, ours.gap)
            print(f"{name:<13} {row.layers:>6} {row.batch:>5}  {ours.iteration_s:9.2f}  {rand.iteration_s:8.2f}  "
                  f"{ours.gap:5.1%}  {ours.iteration_s / rand.iteration_s:5.2f}")
        print(f"  whole table for {name}: {seconds:.1f} s")
    print(f"scheduled <= random in {wins}/{rows} rows; largest gap {worst_gap:.1%}")


def gaps() -> None:
    print("## time objective, sim plan's default 60 s, 24 layers, batch 1024, P8D8")
    for name, item in SCENARIOS.items():
        result, seconds = plan_time(item.build(), 24, 1024, 60.0)
        print(f"{name:<13} {result.value:8.3f} s/iteration, bound {result.bound:8.3f}, gap {result.gap:5.1%}, "
              f"{seconds:5.1f} s")


def world_like(per_city: int):
    cities = ("oregon", "virginia", "ohio", "tokyo", "seoul", "london", "frankfurt", "ireland")
    return geo(f"world-{8 * per_city}", {c: per_city for c in cities}, GEO_WITHIN_REGION, WORLD_LINKS)


def plan_time(cluster, layers: int, batch: int, limit_s: float, uneven: bool = False, pp: int = 8,
              evaluations: int = 400):
    model, training = gpt3_xl(layers), TrainingSpec(global_batch=batch)
    dp = cluster.size // pp
    dp_bytes, pp_bytes = derived_bytes(model, training, pp, dp)
    problem = Problem(device_count=cluster.size, layers=layers, pp=pp, dp=dp, tables=comm_tables(cluster),
                      dp_bytes=dp_bytes, pp_bytes=pp_bytes)
    start = time.perf_counter()
    settings = SearchSettings(time_limit_s=limit_s, uneven=uneven, max_evaluations=evaluations)
    result = plan_search(problem, settings, evaluator(cluster, model, training),
                         lambda u: time_bound_inputs(cluster, model, training, pp, dp, u))
    return result, time.perf_counter() - start


def scale() -> None:
    print("## scale: world-like clusters, time objective, batch 16 per replica")
    for per_city, limit in ((32, 60.0), (128, 300.0)):  # the targets: 256 devices in 60 s, 1,024 in 5 min
        cluster = world_like(per_city)
        result, seconds = plan_time(cluster, 24, 16 * cluster.size // 8, limit)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{cluster.size} devices: {result.value:.2f} s/iteration, bound {result.bound:.2f}, gap {result.gap:.1%}, "
              f"{seconds:.1f} s, peak RSS so far {rss:.2f} GiB")


def thorough() -> None:
    print("## a longer limit: the sharper bound terms get what the plain MILP leaves")
    for layers in (32, 40):
        result, seconds = plan_time(SCENARIOS["world"].build(), layers, 1024, 300.0)
        print(f"world {layers} layers, batch 1024, 300 s: {result.value:.3f} s/iteration, bound {result.bound:.3f}, "
              f"gap {result.gap:.1%}, {seconds:.1f} s")
    cluster = world_like(32)
    result, seconds = plan_time(cluster, 24, 16 * cluster.size // 8, 400.0)
    print(f"{cluster.size} devices, 400 s: {result.value:.2f} s/iteration, bound {result.bound:.2f}, gap {result.gap:.1%}, "
          f"{seconds:.1f} s")


def mixed() -> None:
    print("## mixed GPUs: examples/mixed-gpus-cluster.json, 40 layers, batch 1024")
    cluster = load_cluster(ROOT / "examples" / "mixed-gpus-cluster.json")
    even, s_even = plan_time(cluster, 40, 1024, 30.0, uneven=False)
    uneven, s_uneven = plan_time(cluster, 40, 1024, 30.0, uneven=True)
    layers = [end - start for start, end in uneven.placement.stage_layers]
    print(f"even split:   {even.value:.2f} s/iteration (bound {even.bound:.2f}), {s_even:.1f} s")
    print(f"uneven split: {uneven.value:.2f} s/iteration (bound {uneven.bound:.2f}), {s_uneven:.1f} s, "
          f"layers per stage {layers}")


def ga() -> None:
    from scheduler.evolutionary import evolutionary_search

    print("## the study's genetic algorithm (100 + 4,900), comm objective, study matrices, seed 0")
    for name, published in PUBLISHED.items():
        problem = Problem(device_count=64, layers=24, pp=8, dp=8, tables=comm_tables(scheduler_matrices(name)),
                          dp_bytes=0.65e9, pp_bytes=0.471e9)
        start = time.perf_counter()
        result = evolutionary_search(problem, "comm", None, seed=0)
        print(f"{name:<13} {result.value:7.3f} in {time.perf_counter() - start:6.1f} s (published {published})")


def small_spot():
    """Spot's first 2 p3.8xlarge and 8 p3.2xlarge, 16 devices."""
    doc = SCENARIOS["spot"].build().to_json()
    keep = [h["name"] for h in doc["hosts"] if h["name"] in ("p3.8xl-0", "p3.8xl-1")
            or h["name"] in {f"p3.2xl-{i}" for i in range(8)}]
    devices = [d for d in doc["devices"] if d["host"] in keep]
    doc |= {"name": "spot-16", "hosts": [h for h in doc["hosts"] if h["name"] in keep],
            "devices": [dict(d, id=i) for i, d in enumerate(devices)]}
    return Cluster.from_json(doc)


def split() -> None:
    print("## the gap's share: sim predict's search (5 s, 400 evaluations) against 60 s and 5,000")
    for name, cluster, layers, batch, pp in (("spot", SCENARIOS["spot"].build(), 24, 1024, 8),
                                             ("spot-16", small_spot(), 8, 256, 4)):
        for limit_s, evaluations in ((5.0, 400), (60.0, 5000)):
            result, seconds = plan_time(cluster, layers, batch, limit_s, pp=pp, evaluations=evaluations)
            print(f"{name:<8} {limit_s:4.0f} s {evaluations:5d} evaluations: {result.value:7.3f} s/iteration, "
                  f"bound {result.bound:7.3f}, gap {result.gap:5.1%}, {seconds:5.1f} s")


def table() -> None:
    print("## the main command, whole: sim predict --case NAME (a fresh process, an empty plan cache), seconds and "
          "gaps; spot again from the cache it left")
    for name, limit, again in (("spot", None, True), ("world", None, False), ("world", "20", False)):
        argv = [sys.executable, "-m", "simulator.cli.main", "predict", "--case", name, "--json", "--quiet"]
        argv += ["--plan-time-limit", limit] if limit else []
        with tempfile.TemporaryDirectory() as folder:
            for run in ("fresh", "again")[:1 + again]:
                start = time.perf_counter()
                out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True,
                                     env={**os.environ, "TASKLET_CACHE": folder}).stdout
                seconds = time.perf_counter() - start
                rows = json.loads(out)["rows"]
                scheduled = [row["systems"]["ours_scheduled"] for row in rows]
                cells = " ".join(f"{s['iteration_s']:.2f}/{s['gap']:.1%}" for s in scheduled)
                print(f"{name:<6} {limit or '1 (default)':>11} s a row, {run}: {seconds:5.1f} s, largest gap "
                      f"{max(s['gap'] for s in scheduled):.1%}; rows (s/iteration/gap): {cells}")


SECTIONS = {"study": study, "gaps": gaps, "random": versus_random, "scale": scale, "thorough": thorough, "mixed": mixed,
            "ga": ga, "split": split, "table": table}

if __name__ == "__main__":
    for section in sys.argv[1:] or list(SECTIONS):
        SECTIONS[section]()
        print(flush=True)
