"""The executor's validation targets (issue 5), measured. Run as ``python
benchmarks/bench_validation.py [section ...]`` with sections ``sharing`` and ``plans`` (default:
both), on an otherwise idle machine.

- sharing: 1 to 4 one-thread processes each timing a gpt-small layer's forward and backward at
  once: each one's speed against one alone, beside process sharing's min(1, cores / n). This is
  where simulator.sharing's model comes from.
- plans: for each validation plan of examples/, run the plan (`executor run`, 1 warm-up + 8
  timed iterations; the two-region ones with --emulate-network) between two profiles of this CPU
  with one thread and no dropout, as the executor trains (`profiler compute --threads 1 --tp 1 [T]
  --micro-batch 1 --dropout 0`, right before and right after: this VM's single-thread speed
  drifts by ±10% over minutes), and put the mean of the two SimPy predictions beside the run: the
  Markdown table of the README. It also says whether the scheduled two-region plan beats the
  random one in both prediction and measurement.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PLANS = [  # (what it validates, plan file, emulate the plan's network)
    ("pipeline only", "examples/cpu-pipeline-only-plan.json", False),
    ("data-parallel only", "examples/cpu-data-parallel-plan.json", False),
    ("hybrid", "examples/cpu-pipeline-plan.json", False),
    ("hybrid, 2 regions, scheduled", "examples/cpu-two-regions-plan.json", True),
    ("hybrid, 2 regions, random", "examples/cpu-two-regions-random-plan.json", True),
    ("tensor + pipeline parallel", "examples/cpu-tensor-parallel-plan.json", False),
]
ITERATIONS = 8


def _layer_worker(start, results, repeats: int) -> None:
    import torch

    from profiler.gpt import GPTLayerShard
    from profiler.model import gpt_small

    torch.set_num_threads(1)
    model = gpt_small()
    layer = GPTLayerShard(model.d_model, model.heads, model.ffn, 1, 0.0)
    x = torch.randn(1, model.seq_len, model.d_model, requires_grad=True)
    for _ in range(3):
        layer(x).sum().backward()
    start.wait()
    begin = time.perf_counter()
    for _ in range(repeats):
        layer(x).sum().backward()
    results.put((time.perf_counter() - begin) / repeats)


def sharing() -> None:
    context = mp.get_context("spawn")
    cores = os.cpu_count() or 1
    alone = None
    for n in range(1, 2 * cores + 1):
        start, results = context.Barrier(n), context.Queue()
        workers = [context.Process(target=_layer_worker, args=(start, results, 20)) for _ in range(n)]
        for w in workers:
            w.start()
        seconds = [results.get() for _ in workers]
        for w in workers:
            w.join()
        alone = alone or seconds[0]
        speeds = ", ".join(f"{alone / s:.2f}" for s in sorted(seconds))
        print(f"{n} at once on {cores} cores: speed {speeds} of one alone (mean {alone / statistics.mean(seconds):.2f}); "
              f"process sharing says {min(1.0, cores / n):.2f}")


def plans() -> None:
    from profiler.files import read_json
    from profiler.profile import load_profile
    from scheduler.plan import load_plan
    from simulator.job import Job
    from simulator.predict import predict
    from simulator.validate import compare, measured, run_units

    rows, iterations = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for label, path, emulate in PLANS:
            plan = load_plan(ROOT / path)

            def profile(name: str):
                out = Path(folder) / name
                subprocess.run([sys.executable, "-m", "profiler.cli", "compute", "--threads", "1", "--tp",
                                *sorted({"1", str(plan.placement.tp)}), "--micro-batch", "1", "--dropout", "0",
                                "--quiet", "-o", str(out)], check=True, cwd=ROOT)
                return load_profile(out)

            # Profiled right before and right after its run: this VM's speed drifts over minutes.
            before = profile("before.json")
            run = Path(folder) / "run.json"
            begin = time.perf_counter()
            subprocess.run([sys.executable, "-m", "executor.cli", "run", path, "--iterations", str(ITERATIONS),
                            "--out", str(run), "--quiet"] + (["--emulate-network"] if emulate else []),
                           check=True, cwd=ROOT)
            wall = time.perf_counter() - begin
            after = profile("after.json")
            report = read_json(run, "run report")
            units = run_units(report, plan.cluster, str(run))
            predicted = [predict(Job(cluster=plan.cluster, model=plan.model, training=plan.training, profiles=(p,),
                                     units=units), plan.placement, engine="simpy")[0] for p in (before, after)]
            mean = sum(p.iteration_s for p in predicted) / 2
            row = compare(mean, predicted[0].breakdown, measured(report, str(run)))[0]
            iterations[path] = (row.predicted_s, row.measured_s)
            rows.append(f"| {label} | `{path}` | {plan.placement.config} {plan.placement.schedule.value}/"
                        f"{plan.placement.sync.value} | {predicted[0].iteration_s:.3f} / {predicted[1].iteration_s:.3f}"
                        f" | {row.measured_s:.3f} | {row.error:+.1%} | {wall:.0f} s |")
            print(rows[-1], file=sys.stderr, flush=True)
    print("| plan | file | configuration | predicted s/it (profile before / after) | measured s/it | error of the "
          "mean | run wall |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    scheduled, random = iterations[PLANS[3][1]], iterations[PLANS[4][1]]
    print(f"\nscheduled beats random: predicted {scheduled[0]:.3f} < {random[0]:.3f}: {scheduled[0] < random[0]}; "
          f"measured {scheduled[1]:.3f} < {random[1]:.3f}: {scheduled[1] < random[1]}")


SECTIONS = {"sharing": sharing, "plans": plans}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(SECTIONS):
        if name not in SECTIONS:
            sys.exit(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
        SECTIONS[name]()
