"""Time the GPT3-XL layer shard on a GPU and set it beside the simulator's datasheet model.

One prepared run on a lent GPU (device tool):
    python3 benchmarks/gpu_layer_times.py --out $OUT/layer_times.json
It measures forward, backward and recompute (= forward) of ``profiler.gpt.GPTLayerShard`` for
fp16 and bf16, tensor-parallel shards 1/2/4/8 and micro-batches 1/2/4, with CUDA events: 3
warm-ups, then the median of 10 repeats and their spread. Each row also carries the simulator's
prediction for the same shape, so the file says how far the datasheet-derived model is off.
``--small`` runs a tiny shape on the CPU to check the script itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from profiler.gpt import GPTLayerShard  # noqa: E402
from profiler.gpus import GPU_KINDS  # noqa: E402
from profiler.model import ModelSpec, TrainingSpec, gpt3_xl  # noqa: E402
from simulator.cost.compute import layer_times  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def timer(device: torch.device):
    if device.type == "cuda":
        def run(fn) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
    else:
        def run(fn) -> float:
            begin = time.perf_counter()
            fn()
            return time.perf_counter() - begin
    return run


def measure(layer: GPTLayerShard, x: torch.Tensor, warmup: int, repeats: int, run) -> dict:
    grad = torch.randn_like(x)

    def forward() -> None:
        with torch.no_grad():
            layer(x)

    def forward_backward() -> None:
        layer(x).backward(grad)

    samples = {"forward": [], "forward_backward": []}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        for i in range(warmup + repeats):
            seconds = run(fn)
            if i >= warmup:
                samples[name].append(seconds)
    fwd = statistics.median(samples["forward"])
    both = statistics.median(samples["forward_backward"])
    return {"forward_s": fwd, "backward_s": both - fwd, "forward_spread_s": max(samples["forward"]) - min(samples["forward"]),
            "forward_backward_spread_s": max(samples["forward_backward"]) - min(samples["forward_backward"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--small", action="store_true", help="tiny shape on the CPU, to test the script")
    parser.add_argument("--gpu-kind", default="H100-80GB", help="simulator GPU kind to compare with")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    model = ModelSpec(name="small", layers=1, d_model=256, heads=8, ffn=1024, seq_len=128, vocab=512) if args.small else gpt3_xl(1)
    run = timer(device)
    rows = []
    for dtype_name, dtype in DTYPES.items():
        for tp in (1, 2, 4, 8):
            for micro_batch in (1, 2, 4):
                torch.manual_seed(0)
                layer = GPTLayerShard(model.d_model, model.heads, model.ffn, tp).to(device=device, dtype=dtype)
                x = torch.randn(micro_batch, model.seq_len, model.d_model, device=device, dtype=dtype, requires_grad=True)
                measured = measure(layer, x, 3 if not args.small else 1, 10 if not args.small else 2, run)
                if device.type == "cuda":
                    peak = torch.cuda.max_memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                else:
                    peak = 0
                predicted = layer_times(GPU_KINDS[args.gpu_kind], model,
                                        TrainingSpec(global_batch=micro_batch, micro_batch=micro_batch, precision=dtype_name), tp)
                rows.append({"dtype": dtype_name, "tp": tp, "micro_batch": micro_batch, **measured,
                             "peak_memory_bytes": peak, "model_forward_s": predicted.forward_s,
                             "model_backward_s": predicted.backward_s})
                print(f"{dtype_name} tp={tp} mb={micro_batch}: fwd {measured['forward_s'] * 1e3:.3f} ms "
                      f"(model {predicted.forward_s * 1e3:.3f}), bwd {measured['backward_s'] * 1e3:.3f} ms "
                      f"(model {predicted.backward_s * 1e3:.3f})", file=sys.stderr, flush=True)
                del layer, x
    doc = {"what": "GPT layer shard timings (profiler.gpt.GPTLayerShard) beside the simulator's model",
           "model": model.to_json(), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "compared_with": args.gpu_kind, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
