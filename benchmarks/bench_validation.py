"""The executor's validation targets (issue 5), measured. Run as ``python
benchmarks/bench_validation.py [section ...]`` with sections ``sharing``, ``loopback`` and
``plans`` (default: all), on an otherwise idle machine.

- sharing: 1 to 4 one-thread processes each timing a gpt-small layer's forward and backward at
  once: each one's speed against one alone, and the share of the cores they got together, beside
  process sharing's min(1, cores x CPU_BUSY_SHARE / n). This is where simulator.cost.sharing's model and
  CPU_BUSY_SHARE come from.
- loopback: what a transfer through the loopback (gloo, 32 MB, one-thread processes) costs the
  cores: one alone; two at once, whence the cores one keeps busy at full speed
  (simulator.cost.sharing.LOOPBACK_COPY_CORES); and one beside two ranks computing, each side's speed
  against what the model says. Then what the executor's syncs cost between two ranks alone, for
  the 42.5 MB gradient of a gpt-small stage: gloo's reduce + broadcast (the ps sync), its
  all-reduce (ring) and a send each way (what the simulator's push and pull move).
- plans: for each validation plan of examples/, run the plan (`executor run`, 1 warm-up + 8
  timed iterations; the two-region ones with --emulate-network) between two profiles of this CPU
  with one thread and no dropout, as the executor trains (`profiler compute --threads 1 --tp 1 [T]
  --micro-batch 1 --dropout 0`, right before and right after: this VM's single-thread speed
  drifts by ±10% over minutes), and put the mean of the two SimPy predictions beside the run's mean
  iteration (and the range of its iterations, which on this VM spanned up to 65%): the
  Markdown table of docs/executor.md. It also says whether the scheduled two-region plan beats the
  random one in both prediction and measurement. With TASKLET_KEEP_RUNS=DIR it keeps each plan's
  two profiles and run report in DIR/<plan>/, for `sim validate` by hand.
"""

from __future__ import annotations

import math
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
    from simulator.cost.sharing import CPU_BUSY_SHARE

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
        print(f"{n} at once on {cores} cores: speed {speeds} of one alone (mean {alone / statistics.mean(seconds):.2f}, "
              f"so they got {n * alone / statistics.mean(seconds) / cores:.2f} of the cores); process sharing with "
              f"CPU_BUSY_SHARE says {min(1.0, cores * CPU_BUSY_SHARE / n):.2f}")


_LOOPBACK_ELEMENTS = 8 * 2**20  # 32 MB of fp32
_LOOPBACK_SENDS = 150  # each pair's, about 3 s alone
_ALONE_S = 4.0  # how long a rank computing alone loops


def _layer_seconds(until) -> float:
    """Mean seconds of a gpt-small layer's forward and backward, looped until ``until()``."""
    import torch

    from profiler.gpt import GPTLayerShard
    from profiler.model import gpt_small

    model = gpt_small()
    layer = GPTLayerShard(model.d_model, model.heads, model.ffn, 1, 0.0)
    x = torch.randn(1, model.seq_len, model.d_model, requires_grad=True)
    layer(x).sum().backward()
    count, begin = 0, time.perf_counter()
    while not until() or not count:
        layer(x).sum().backward()
        count += 1
    return (time.perf_counter() - begin) / count


def _loopback_worker(rank: int, port: int, pairs: list, computing: list, sent, results) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=4)
    dist.barrier()
    mine = [(src, dst) for src, dst in pairs if rank in (src, dst)]
    if rank in computing:  # until the transfers are done, or for a while when there are none
        begin = time.perf_counter()
        results.put(("compute", rank, _layer_seconds(
            (lambda: sent.value == 2 * len(pairs)) if pairs else (lambda: time.perf_counter() - begin > _ALONE_S))))
    if mine:
        buffer, begin = torch.ones(_LOOPBACK_ELEMENTS), time.perf_counter()
        for _ in range(_LOOPBACK_SENDS):  # a count, not a time: each send needs its receive
            for work in [dist.isend(buffer, dst) if rank == src else dist.irecv(torch.empty_like(buffer), src)
                         for src, dst in mine]:
                work.wait()
        results.put(("transfer", rank, 4 * _LOOPBACK_ELEMENTS * _LOOPBACK_SENDS / (time.perf_counter() - begin)))
        with sent.get_lock():
            sent.value += 1
    dist.barrier()
    dist.destroy_process_group()


_SYNC_BYTES = 42_500_000  # a gpt-small stage's fp32 gradient (2 of 4 layers with the embedding or head)


def _sync_worker(rank: int, port: int, results) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    flat, peer = torch.ones(_SYNC_BYTES // 4), 1 - rank
    ways = {"reduce + broadcast (ps)": lambda: (dist.reduce(flat, dst=0), dist.broadcast(flat, src=0)),
            "all-reduce (ring)": lambda: dist.all_reduce(flat),
            "a send each way": lambda: (dist.send(flat, peer), dist.recv(flat, peer)) if rank == 0
            else (dist.recv(flat, peer), dist.send(flat, peer))}
    for name, way in ways.items():
        seconds = []
        for _ in range(6):
            dist.barrier()
            begin = time.perf_counter()
            way()
            seconds.append(time.perf_counter() - begin)
        if rank == 0:
            results.put((name, statistics.median(seconds[1:])))
    dist.barrier()
    dist.destroy_process_group()


def _loopback_case(pairs: list, computing: list) -> dict[str, float]:
    """Mean transfer rate (bytes/s) and compute seconds of four processes: ``pairs`` send to each
    other, while ``computing`` loop a layer."""
    from profiler.spawn import free_port

    context = mp.get_context("spawn")
    port = free_port()
    results, sent = context.Queue(), context.Value("i", 0)
    workers = [context.Process(target=_loopback_worker, args=(rank, port, pairs, computing, sent, results))
               for rank in range(4)]
    for w in workers:
        w.start()
    got: dict[str, list[float]] = {}
    for _ in range(2 * len(pairs) + len(computing)):
        kind, _, value = results.get()
        got.setdefault(kind, []).append(value)
    for w in workers:
        w.join()
    return {kind: statistics.mean(values) for kind, values in got.items()}


def loopback() -> None:
    from simulator.cost.sharing import LOOPBACK_COPY_CORES, fair_speeds

    cores = os.cpu_count() or 1
    alone = _loopback_case([(0, 1)], [])["transfer"]
    two = _loopback_case([(0, 1), (2, 3)], [])["transfer"]
    layer = _loopback_case([], [2, 3])["compute"]
    beside = _loopback_case([(0, 1)], [2, 3])
    # Two transfers that each keep k cores busy at full speed run at cores / 2k (where 2k > cores).
    busy = cores * alone / (2 * two) if two < alone else math.nan
    print(f"one loopback transfer alone: {alone / 1e9:.2f} GB/s; two at once on {cores} cores: {two / 1e9:.2f} GB/s "
          f"each ({two / alone:.2f} of alone), so one at full speed keeps {busy:.2f} cores busy "
          f"(LOOPBACK_COPY_CORES = {LOOPBACK_COPY_CORES})")
    copy, _, compute, _ = fair_speeds(cores, [LOOPBACK_COPY_CORES / 2] * 2 + [1.0, 1.0])  # two sides, two ranks
    print(f"one transfer beside two ranks computing: transfer at {beside['transfer'] / alone:.2f} of alone (model "
          f"{copy:.2f}), compute at {layer / beside['compute']:.2f} of alone (model {compute:.2f})")
    from profiler.spawn import free_port

    context = mp.get_context("spawn")
    results, port = context.Queue(), free_port()
    workers = [context.Process(target=_sync_worker, args=(rank, port, results)) for rank in range(2)]
    for w in workers:
        w.start()
    timed = [results.get() for _ in range(3)]
    for w in workers:
        w.join()
    print(f"syncing {_SYNC_BYTES / 1e6:.1f} MB between two ranks alone: " + "; ".join(
        f"{name} {seconds * 1e3:.1f} ms" for name, seconds in timed))


def plans() -> None:
    from profiler.profile import load_profile
    from profiler.run_report import load_run_report
    from scheduler.plan import load_plan
    from simulator.cost.job import Job
    from simulator.outputs.validate import compare, measured, run_units
    from simulator.predict import predict

    rows, iterations = [], {}
    keep = os.environ.get("TASKLET_KEEP_RUNS")  # a folder to keep each plan's profiles and run report in
    with tempfile.TemporaryDirectory() as scratch:
        for label, path, emulate in PLANS:
            folder = Path(keep or scratch) / Path(path).stem
            folder.mkdir(parents=True, exist_ok=True)
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
            report = load_run_report(run)
            units = run_units(report, plan.cluster, str(run))
            predicted = [predict(Job(cluster=plan.cluster, model=plan.model, training=plan.training, profiles=(p,),
                                     units=units), plan.placement, engine="simpy")[0] for p in (before, after)]
            mean = sum(p.iteration_s for p in predicted) / 2
            row = compare(mean, predicted[0].breakdown, measured(report))[0]
            iterations[path] = (row.predicted_s, row.measured_s)
            rows.append(f"| {label} | `{path}` | {plan.placement.config} {plan.placement.schedule.value}/"
                        f"{plan.placement.sync.value} | {predicted[0].iteration_s:.3f} / {predicted[1].iteration_s:.3f}"
                        f" | {row.measured_s:.3f} | {min(report.iteration_s):.3f}–{max(report.iteration_s):.3f}"
                        f" | {row.error:+.1%} | {wall:.0f} s |")
            print(rows[-1], file=sys.stderr, flush=True)
    print("| plan | file | configuration | predicted s/it (profile before / after) | measured s/it | its iterations | "
          "error of the mean | run wall |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    scheduled, random = iterations[PLANS[3][1]], iterations[PLANS[4][1]]
    print(f"\nscheduled beats random: predicted {scheduled[0]:.3f} < {random[0]:.3f}: {scheduled[0] < random[0]}; "
          f"measured {scheduled[1]:.3f} < {random[1]:.3f}: {scheduled[1] < random[1]}")


SECTIONS = {"sharing": sharing, "loopback": loopback, "plans": plans}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(SECTIONS):
        if name not in SECTIONS:
            sys.exit(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
        SECTIONS[name]()
