"""`profiler compute`'s measurements: time the model's parts (profiler.gpt, the modules the executor
runs) on this machine's CPU or a CUDA GPU, and write what was measured as a profile.

Each part is run ``warmup`` times, then ``repeats`` times, each repeat timed alone (on CUDA
between two synchronisations). A layer shard's repeat is its forward with autograd recording, its
backward from a random output gradient (the input's gradient included, as a pipeline stage
needs it), and the recompute: the forward once more with autograd, as activation checkpointing
runs it before the backward. The embedding and the head (with its fp32 loss) are timed the same
way; the optimizer as plain SGD's step over a flat parameter. Peak memory is what the part
holds beyond its weights: on CUDA the allocator's peak over the part's measurement, less the
weights already there; on a CPU, which keeps no such count, the weights' gradients and every
other tensor autograd saves for the backward (counted by torch's saved-tensor hooks).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import statistics
import time
from typing import Callable

import torch

from profiler.errors import InputError
from profiler.gpt import GPTEmbedding, GPTHead, GPTLayerShard
from profiler.gpus import GPU_KINDS, PROFILE_ONLY_KINDS
from profiler.model import ModelSpec
from profiler.profile import Measured, Profile, Timing

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# Parameters of the timed SGD step: with their gradients far past the caches (a CPU's few MB of
# L3; an H100's 50 MB of L2), so the step runs at memory speed, as a stage's step does.
OPTIMIZER_ELEMENTS = {"cpu": 1 << 23, "cuda": 1 << 26}


def device_kind(device: torch.device) -> str | None:
    """The kind name clusters use: "CPU", or the GPU kind the CUDA device is (by the words of its
    name and its memory); None for a GPU no kind describes (give --kind)."""
    if device.type == "cpu":
        return "CPU"
    words = set(re.split(r"[\s-]+", torch.cuda.get_device_name(device).upper()))
    memory_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    for family, sizes in (("H100", (80,)), ("A100", (40, 80)), ("V100", (16,)), ("L4", (24,)), ("T4", (16,)),
                          ("3090", (24,)), ("4090", (24,))):
        size = min(sizes, key=lambda gib: abs(gib - memory_gib))
        if family in words and abs(size - memory_gib) < 0.25 * size:
            names = {"V100": "V100-SXM2-16GB", "L4": "L4", "T4": "T4", "3090": "RTX-3090", "4090": "RTX-4090"}
            return names.get(family, f"{family}-{size}GB")
    return None


def measure_compute(shape: dict[str, int], *, device: str, dtype: str, tps: list[int], micro_batches: list[int],
                    warmup: int = 3, repeats: int = 10, kind: str | None = None, dropout: float = 0.1,
                    progress: Callable[[str], None] | None = None) -> Profile:
    """Every part at every (tp, micro-batch) of the grid; ``shape`` as Profile.shape."""
    if warmup < 0 or repeats < 1 or not tps or not micro_batches:
        raise InputError(f"measure_compute: warmup {warmup} must be ≥ 0, repeats {repeats} ≥ 1, and the grid not empty")
    dev = torch.device(device)
    kind = kind or device_kind(dev)
    if kind is None:
        raise InputError(f"no known kind is a {torch.cuda.get_device_name(dev)}: name its kind with --kind "
                         f"(known: {', '.join((*GPU_KINDS, *PROFILE_ONLY_KINDS))})")
    rows: dict[str, list[Measured]] = {"layers": [], "embedding": [], "head": []}
    for tp in tps:
        for micro_batch in micro_batches:
            if progress:
                progress(f"tp {tp}, micro-batch {micro_batch}")
            torch.manual_seed(0)
            rows["layers"].append(_layer(shape, dev, DTYPES[dtype], tp, micro_batch, warmup, repeats, dropout))
            rows["embedding"].append(_embedding(shape, dev, DTYPES[dtype], tp, micro_batch, warmup, repeats, dropout))
            rows["head"].append(_head(shape, dev, DTYPES[dtype], tp, micro_batch, warmup, repeats))
    memory = (torch.cuda.get_device_properties(dev).total_memory if dev.type == "cuda"
              else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return Profile(device_kind=kind,
                   device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
                   memory_bytes=float(memory), torch_version=torch.__version__,
                   threads=torch.get_num_threads() if dev.type == "cpu" else 0, dtype=dtype,
                   host=platform.node(), date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   warmup=warmup, repeats=repeats, shape=dict(shape), layers=tuple(rows["layers"]),
                   embedding=tuple(rows["embedding"]), head=tuple(rows["head"]),
                   optimizer_s_per_param_byte=_optimizer(dev, DTYPES[dtype], warmup, repeats), dropout=dropout)


def measure_layer(shape: dict[str, int], *, device: str, dtype: str, tp: int = 1, micro_batch: int = 1,
                  warmup: int = 3, repeats: int = 10, dropout: float = 0.1) -> Measured:
    """One transformer layer at one (tp, micro-batch): the row measure_compute records for it."""
    torch.manual_seed(0)
    return _layer(shape, torch.device(device), DTYPES[dtype], tp, micro_batch, warmup, repeats, dropout)


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
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved = [0]

    def count(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.untyped_storage().data_ptr() not in weights:
            saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
    for i in range(warmup + repeats):
        inputs = make_input()
        saved[0] = 0
        # On a CPU the saved-tensor hooks count what autograd keeps; on CUDA the allocator does,
        # and the hooks' Python calls would slow the launch-bound small shards being timed.
        hooks = torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor) if device.type == "cpu" \
            else contextlib.nullcontext()
        with hooks:
            forward_s, out = timed(lambda: forward(*inputs))
        grad = torch.randn_like(out) if out.dim() else None
        backward_s, _ = timed(lambda: out.backward(grad))
        recompute_s = timed(lambda: forward(*inputs))[0] if recompute else 0.0
        module.zero_grad(set_to_none=False)
        if i >= warmup:
            samples["forward"].append(forward_s)
            samples["backward"].append(backward_s)
            samples["recompute"].append(recompute_s)
    # What the part holds beyond its weights: their gradients and the activations saved for the
    # backward (on CUDA the allocator's peak over the weights already there).
    gradients = sum(p.numel() * p.element_size() for p in module.parameters())
    peak = torch.cuda.max_memory_allocated(device) - start_bytes if device.type == "cuda" else gradients + saved[0]
    return Measured(tp=tp, micro_batch=inputs[0].shape[0], forward=_timing(samples["forward"]), backward=_timing(samples["backward"]),
                    recompute=_timing(samples["recompute"]) if recompute else None, peak_memory_bytes=int(peak))


def _layer(shape, device, dtype, tp, micro_batch, warmup, repeats, dropout) -> Measured:
    layer = GPTLayerShard.of(ModelSpec(name="profile", layers=1, **shape), tp, dropout).to(device, dtype)

    def make_input():
        x = torch.randn(micro_batch, shape["seq_len"], shape["d_model"], device=device, dtype=dtype)
        return (x.requires_grad_(),)

    return _measure(layer, make_input, device, tp, warmup, repeats, recompute=True)


def _embedding(shape, device, dtype, tp, micro_batch, warmup, repeats, dropout) -> Measured:
    learned = shape.get("position", "learned") == "learned"
    embedding = GPTEmbedding(shape["vocab"], shape["d_model"], shape["seq_len"], tp, dropout, learned).to(device, dtype)
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
    """Seconds per byte of parameters for plain SGD's step (docs/facts.md §1: the study's optimizer)."""
    elements = OPTIMIZER_ELEMENTS[device.type]
    weight = torch.nn.Parameter(torch.zeros(elements, device=device, dtype=dtype))
    weight.grad = torch.ones_like(weight)
    step = torch.optim.SGD([weight], lr=1e-3).step
    timed = _clock(device)
    samples = [timed(step)[0] for _ in range(warmup + repeats)][warmup:]
    return statistics.median(samples) / (elements * weight.element_size())
