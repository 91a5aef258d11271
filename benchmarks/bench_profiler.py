"""The profiler's targets (issue 4), measured. Run as ``python benchmarks/bench_profiler.py
[section ...]`` with sections ``compute``, ``stack``, ``network`` (default: all).

- compute: `profiler compute` over its default grid on this CPU (gpt-small, tp 1 2 4 8 ×
  micro-batch 1 2 4, fp32): wall seconds;
- stack: 4 layers of that shape, forward + backward in one process, measured (median of 15)
  against 4 × the profile's layer, for 1 and 2 threads;
- network: `profiler network --spawn N` for N = 2, 4, 8 on the loopback: wall seconds, and the
  fitted latency, bandwidth and residual of pair (0, 1).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def compute() -> None:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "profiler.cli", "compute", "--quiet", "-o", f"{folder}/p.json"],
                       check=True, cwd=ROOT)
        print(f"profiler compute, default grid on this CPU: {time.perf_counter() - start:.1f} s")


def stack() -> None:
    import torch

    from profiler.gpt import GPTLayerShard
    from profiler.measure import measure_compute
    from profiler.model import TrainingSpec, gpt_small
    from simulator.cost.compute import device_compute

    model = gpt_small(4)
    shape = {key: getattr(model, key) for key in ("d_model", "heads", "ffn", "seq_len", "vocab")}
    training = TrainingSpec(global_batch=1, precision="fp32", activation_recompute=False)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        profile = measure_compute(shape, device="cpu", dtype="fp32", tps=[1], micro_batches=[1])
        layer = device_compute("CPU", model, training, 1, (profile,)).layer
        predicted = 4 * (layer.forward_s + layer.backward_s)
        layers = torch.nn.Sequential(*(GPTLayerShard(model.d_model, model.heads, model.ffn) for _ in range(4)))
        samples = []
        for _ in range(18):
            x = torch.randn(1, model.seq_len, model.d_model, requires_grad=True)
            begin = time.perf_counter()
            layers(x).backward(torch.randn_like(x))
            samples.append(time.perf_counter() - begin)
        measured = statistics.median(samples[3:])
        print(f"{threads} thread(s): 4-layer stack measured {measured * 1e3:.1f} ms, predicted from the profile "
              f"{predicted * 1e3:.1f} ms, error {(predicted - measured) / measured:+.1%}")


def network() -> None:
    for ranks in (2, 4, 8):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "profiler.cli", "network", "--spawn", str(ranks), "--quiet",
                            "-o", f"{folder}/c.json"], check=True, cwd=ROOT)
            seconds = time.perf_counter() - start
            doc = json.loads(Path(f"{folder}/c.json").read_text())
        print(f"profiler network --spawn {ranks}: {seconds:.1f} s; pair (0, 1): latency "
              f"{doc['latency_s'][0][1] * 1e6:.0f} µs, {doc['bandwidth_bytes_per_s'][0][1] / 1e9:.2f} GB/s, "
              f"fit residual {doc['measured']['fit_residual'][0][1]:.1%}")


SECTIONS = {"compute": compute, "stack": stack, "network": network}

if __name__ == "__main__":
    for section in sys.argv[1:] or list(SECTIONS):
        SECTIONS[section]()
