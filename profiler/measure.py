"""`profiler compute`'s measurements: time the model's parts (profiler.gpt, the modules the executor
runs) on this machine's CPU or a CUDA GPU, and write what was measured as a profile.

Each part is run ``warmup`` times, then ``repeats`` times, each repeat timed alone (on CUDA
between two synchronisations). A layer shard's repeat is its forward with autograd recording, its
backward from a random output gradient (the input's gradient included, as a pipeline stage
needs it), and the recompute: the forward once more with autograd, as activation checkpointing
runs it before the backward. The embedding and the head (with its fp32 loss) are timed the same
way; the optimizer as plain SGD's step over a flat parameter. Peak memory is the CUDA allocator's
peak over the part's measurement; on a CPU, which keeps no such count, the bytes the part holds
for its backward (its parameters and gradients, and every tensor autograd saves, counted by
torch's saved-tensor hooks).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from typing import Callable

import torch

from profiler.gpt import GPTEmbedding, GPTHead, GPTLayerShard
from profiler.profile import Measured, Profile, Timing

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
OPTIMIZER_ELEMENTS = 1 << 23  # 8 Mi parameters: far past any cache, small enough for a quick step


def device_kind(device: torch.device) -> str:
    """The kind name clusters use: "CPU", or the GPU kind whose name the CUDA device's carries."""
    if device.type == "cpu":
        return "CPU"
    name = torch.cuda.get_device_name(device)
    memory_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    for family in ("H100", "A100", "V100", "L4", "T4"):
        if family in name:
            if family in ("A100", "H100"):
                return f"{family}-{80 if memory_gib > 45 else 40}GB"
            return "V100-SXM2-16GB" if family == "V100" else family
    for card in ("3090", "4090"):
        if card in name:
            return f"RTX-{card}"
    return name


def measure_compute(shape: dict[str, int], *, device: str, dtype: str, tps: list[int], micro_batches: list[int],
                    warmup: int = 3, repeats: int = 10, kind: str | None = None,
                    progress: Callable[[str], None] | None = None) -> Profile:
    """Every part at every (tp, micro-batch) of the grid; ``shape`` as Profile.shape."""
    dev = torch.device(device)
    rows: dict[str, list[Measured]] = {"layers": [], "embedding": [], "head": []}
    for tp in tps:
        for micro_batch in micro_batches:
            if progress:
                progress(f"tp {tp}, micro-batch {micro_batch}")
            torch.manual_seed(0)
            rows["layers"].append(_layer(shape, dev, DTYPES[dtype], tp, micro_batch, warmup, repeats))
            rows["embedding"].append(_embedding(shape, dev, DTYPES[dtype], tp, micro_batch, warmup, repeats))
            rows["head"].append(_head(shape, dev, DTYPES[dtype], tp, micro_batch, warmup, repeats))
    memory = (torch.cuda.get_device_properties(dev).total_memory if dev.type == "cuda"
              else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return Profile(device_kind=kind or device_kind(dev),
                   device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
                   memory_bytes=float(memory), torch_version=torch.__version__,
                   threads=torch.get_num_threads() if dev.type == "cpu" else 0, dtype=dtype,
                   host=platform.node(), date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   warmup=warmup, repeats=repeats, shape=dict(shape), layers=tuple(rows["layers"]),
                   embedding=tuple(rows["embedding"]), head=tuple(rows["head"]),
                   optimizer_s_per_param_byte=_optimizer(dev, DTYPES[dtype], warmup, repeats))


def _timing(samples: list[float]) -> Timing:
    quartiles = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return Timing(median_s=statistics.median(samples), spread_s=quartiles[2] - quartiles[0])


def _clock(device: torch.device) -> Callable[[Callable[[], object]], tuple[float, object]]:
    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - begin, result
    return timed


def _measure(module: torch.nn.Module, make_input: Callable[[], tuple], device: torch.device, tp: int,
             warmup: int, repeats: int, recompute: bool) -> Measured:
    """Forward, backward (and recompute) of ``module``, which returns a tensor."""
    forward = module
    timed = _clock(device)
    samples: dict[str, list[float]] = {"forward": [], "backward": [], "recompute": []}
    saved = [0]

    def count(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
    for i in range(warmup + repeats):
        inputs = make_input()
        saved[0] = 0
        with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
            forward_s, out = timed(lambda: forward(*inputs))
        grad = torch.randn_like(out) if out.dim() else None
        backward_s, _ = timed(lambda: out.backward(grad))
        recompute_s = timed(lambda: forward(*inputs))[0] if recompute else 0.0
        module.zero_grad(set_to_none=False)
        if i >= warmup:
            samples["forward"].append(forward_s)
            samples["backward"].append(backward_s)
            samples["recompute"].append(recompute_s)
    held = sum(2 * p.numel() * p.element_size() for p in module.parameters()) + saved[0]
    peak = torch.cuda.max_memory_allocated(device) - start_bytes if device.type == "cuda" else held
    return Measured(tp=tp, micro_batch=inputs[0].shape[0], forward=_timing(samples["forward"]), backward=_timing(samples["backward"]),
                    recompute=_timing(samples["recompute"]) if recompute else None, peak_memory_bytes=int(peak))


def _layer(shape, device, dtype, tp, micro_batch, warmup, repeats) -> Measured:
    layer = GPTLayerShard(shape["d_model"], shape["heads"], shape["ffn"], tp).to(device, dtype)

    def make_input():
        x = torch.randn(micro_batch, shape["seq_len"], shape["d_model"], device=device, dtype=dtype)
        return (x.requires_grad_(),)

    return _measure(layer, make_input, device, tp, warmup, repeats, recompute=True)


def _embedding(shape, device, dtype, tp, micro_batch, warmup, repeats) -> Measured:
    embedding = GPTEmbedding(shape["vocab"], shape["d_model"], shape["seq_len"], tp).to(device, dtype)
    ids = torch.randint(0, shape["vocab"] // tp, (micro_batch, shape["seq_len"]), device=device)
    return _measure(embedding, lambda: (ids,), device, tp, warmup, repeats, recompute=False)


def _head(shape, device, dtype, tp, micro_batch, warmup, repeats) -> Measured:
    head = GPTHead(shape["vocab"], shape["d_model"], tp).to(device, dtype)
    targets = torch.randint(0, shape["vocab"] // tp, (micro_batch, shape["seq_len"]), device=device)

    def make_input():
        x = torch.randn(micro_batch, shape["seq_len"], shape["d_model"], device=device, dtype=dtype)
        return x.requires_grad_(), targets

    return _measure(head, make_input, device, tp, warmup, repeats, recompute=False)


def _optimizer(device: torch.device, dtype: torch.dtype, warmup: int, repeats: int) -> float:
    """Seconds per byte of parameters for plain SGD's step (FACTS.md §1: the study's optimizer)."""
    weight = torch.nn.Parameter(torch.zeros(OPTIMIZER_ELEMENTS, device=device, dtype=dtype))
    weight.grad = torch.ones_like(weight)
    step = torch.optim.SGD([weight], lr=1e-3).step
    timed = _clock(device)
    samples = [timed(step)[0] for _ in range(warmup + repeats)][warmup:]
    return statistics.median(samples) / (OPTIMIZER_ELEMENTS * weight.element_size())
