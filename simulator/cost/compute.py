"""How long a GPU takes for one layer, the embedding, the output head and the optimizer step.

Model: every matrix multiply is a roofline over its FLOPs and bytes, with cuBLAS's tile and wave
quantisation (NVIDIA "Matrix Multiplication Background" user's guide: a GEMM runs as 128×128
output tiles spread over the SMs in waves, so small or odd shapes leave SMs idle), plus the
memory-bound element-wise kernels (softmax, layer norm, GELU, dropout, residual) and a launch
cost per kernel. One efficiency factor each for forward and backward scales the GEMM peak
(``GEMM_EFFICIENCY``): solved so that one GPT3-XL layer on a V100 takes docs/facts.md §2's measured
5.3 ms forward and 9.3 ms backward, and carried over to the datasheet GPU kinds. Tensor-parallel
shards then run slower than 1/t of a full layer because their GEMMs are smaller and launches stay.

The optimizer step runs on the GPU (memory-bound SGD over the fp32 master weights), or with the
master weights offloaded (the study's runtime, --use-offload) on the host: the gradients cross
PCIe, the host's cores check and step them, the new weights cross back (``offloaded_step_s``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from profiler.gpus import GpuKind, gpu_kind
from profiler.model import OPTIMIZER_STATE_BYTES, PRECISIONS, ModelSpec, TrainingSpec, gpt3_xl
from profiler.profile import Profile
from scheduler.runtimes import MEGATRON_LAYER, LayerKernels

TILE = 128  # output tile edge of cuBLAS's large half-precision kernels (NVIDIA GEMM guide)
KERNEL_LAUNCH_S = 5e-6  # CUDA kernel launch + tail, a commonly measured few µs per kernel
# docs/facts.md §2: V100, GPT3-XL layer, one 2048-token sequence, fp16: forward 5.3 ms, backward 9.3 ms.
V100_LAYER_FORWARD_S = 5.3e-3
V100_LAYER_BACKWARD_S = 9.3e-3
# SGD step on the fp32 master copy: read the fp16 gradient (2 B) and the master (4 B), write the
# master (4 B) and the fp16 weight (2 B); optimizer state is read and written once more.
OPTIMIZER_BYTES_PER_PARAM = 12
# GEMM efficiency (forward, backward) of the tile-quantised peak that makes one GPT3-XL layer on a
# V100 take docs/facts.md §2's 5.3 ms forward and 9.3 ms backward (``layer_efficiency`` solves them; a
# test holds these to it).
GEMM_EFFICIENCY = (0.49594, 0.62911)

# The study's offloaded step (optimizer/optimizer.py, Fp16Optimizer with offload), per parameter:
# over PCIe the fp16 gradient, converted to fp32 on the GPU, comes to the host (4 B) and the new
# fp16 weight goes back (2 B); both are copies from and to pageable memory, which the CUDA driver
# stages through a pinned buffer with a memcpy on one core (8 B and 4 B moved); PyTorch's ops on the
# host read the fp32 gradient for the overflow check (4 B), run SGD (read master and gradient,
# write master: 12 B) and convert the master to fp16 (read 4 B, write 2 B).
OFFLOAD_PCIE_BYTES_PER_PARAM = 4 + 2
OFFLOAD_STAGING_BYTES_PER_PARAM = 8 + 4
OFFLOAD_HOST_OP_BYTES_PER_PARAM = 4 + 12 + 6
# PCIe 3.0 ×16 (the V100-SXM2's host link on AWS p3): 8 GT/s × 16 lanes × 128/130 = 15.75 GB/s a
# direction, of which 256-byte TLP payloads with 24 bytes of header and framing carry 256/280.
PCIE3_X16_BYTES_PER_S = 8e9 * 16 * 128 / 130 / 8 * 256 / 280
# A p3 host core (Xeon E5-2686 v4) streams from DRAM no faster than its 10 line-fill buffers of 64 B
# per ~90 ns of memory latency (Little's law: 7.1 GB/s); PyTorch's host ops use the 4 physical
# cores of a p3.2xlarge (its default thread count), the driver's staging memcpy one.
HOST_CORE_BYTES_PER_S = 10 * 64 / 90e-9
HOST_OP_THREADS = 4


def offloaded_step_s(params: float) -> float:
    """The SGD step of ``params`` with fp32 master weights in host memory (the study's runtime)."""
    return params * (OFFLOAD_PCIE_BYTES_PER_PARAM / PCIE3_X16_BYTES_PER_S
                     + OFFLOAD_STAGING_BYTES_PER_PARAM / HOST_CORE_BYTES_PER_S
                     + OFFLOAD_HOST_OP_BYTES_PER_PARAM / (HOST_OP_THREADS * HOST_CORE_BYTES_PER_S))


@dataclass(frozen=True, slots=True)
class Gemm:
    m: int
    n: int
    k: int
    batch: int = 1

    @property
    def flops(self) -> float:
        return 2.0 * self.batch * self.m * self.n * self.k

    def bytes(self, element: int) -> float:
        return float(element) * self.batch * (self.m * self.k + self.k * self.n + self.m * self.n)

    def quantised_fraction(self, sm_count: int) -> float:
        """Share of the GPU's tile slots doing useful work: tile and wave quantisation."""
        tiles_m, tiles_n = math.ceil(self.m / TILE), math.ceil(self.n / TILE)
        tiles = self.batch * tiles_m * tiles_n
        waves = math.ceil(tiles / sm_count)
        useful = self.batch * self.m * self.n
        return useful / (waves * sm_count * TILE * TILE)

    def transposed_for_backward(self) -> tuple["Gemm", "Gemm"]:
        """Data gradient (m×k = m×n · n×k) and weight gradient (k×n = k×m · m×n)."""
        return Gemm(self.m, self.k, self.n, self.batch), Gemm(self.k, self.n, self.m, self.batch)


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerTimes:
    forward_s: float
    backward_s: float  # without the recompute
    recompute_s: float  # 0 without activation recompute


def layer_gemms(model: ModelSpec, micro_batch: int, tp: int, fused: bool = True) -> list[Gemm]:
    """The forward GEMMs of one layer's 1/tp shard (Megatron's column/row split); without
    ``fused`` the q, k and v projections are three GEMMs. Keys and values are ``kv_width`` wide
    (narrower under grouped-query attention); a SwiGLU FFN has a gate and an up projection."""
    tokens, h, f = micro_batch * model.seq_len, model.d_model, model.ffn
    heads, kv = model.heads // tp, model.kv_width // tp
    s = model.seq_len
    qkv = ([Gemm(tokens, h // tp + 2 * kv, h)] if fused
           else [Gemm(tokens, h // tp, h), Gemm(tokens, kv, h), Gemm(tokens, kv, h)])
    ffn_in = [Gemm(tokens, f // tp, h)] * (model.ffn_matrices - 1)  # column-parallel: W1, or gate and up
    return qkv + [Gemm(s, s, model.head_dim, micro_batch * heads),  # scores Q·Kᵀ per query head
                  Gemm(s, model.head_dim, s, micro_batch * heads),  # scores · V
                  Gemm(tokens, h, h // tp),  # attention output, row-parallel
                  *ffn_in,
                  Gemm(tokens, h, f // tp)]  # FFN out, row-parallel


def layer_elementwise_bytes(model: ModelSpec, micro_batch: int, tp: int, element: int, fused: bool = True) -> float:
    """Bytes moved by the memory-bound kernels of one layer shard's forward; the activation reads
    its input and writes its output (SwiGLU reads two inputs), rotary positions rewrite q and k."""
    tokens, h, f = micro_batch * model.seq_len, model.d_model, model.ffn
    scores = micro_batch * (model.heads // tp) * model.seq_len ** 2
    norms = 2 * 2 * tokens * h * element  # two layer norms, read + write
    activation = model.ffn_matrices * tokens * (f // tp) * element  # GELU: 1 read 1 write; SwiGLU: 2 and 1
    rotary = 0 if model.position == "learned" else 2 * tokens * (h + model.kv_width) // tp * element
    if fused:
        softmax = scores * (2 * element + 1 + 2 * element)  # scale-mask-softmax, dropout mask + apply
        residual = 2 * tokens * h * (3 * element + 1)  # two bias-dropout-add: 2 reads, 1 write, mask
        return float(softmax + norms + activation + rotary + residual)
    passes = 2 * 2 * scores * element  # scale, then softmax: each reads and writes the scores
    qkv = h // tp + 2 * model.kv_width // tp
    ffn_in = (model.ffn_matrices - 1) * (f // tp)
    biases = 2 * tokens * (qkv + h // tp + ffn_in + h) * element  # addmm's bias copied out, read back by the GEMM
    heads = 2 * tokens * (qkv + h // tp) * element  # q, k, v made contiguous, the output transposed back
    residual = 2 * 3 * tokens * h * element  # two adds: 2 reads, 1 write
    return float(passes + norms + biases + heads + activation + rotary + residual)


def _gemm_time(gemm: Gemm, gpu: GpuKind, peak: float, efficiency: float, element: int) -> float:
    compute = gemm.flops / (peak * efficiency * gemm.quantised_fraction(gpu.sm_count))
    memory = gemm.bytes(element) / gpu.memory_bandwidth_bytes_per_s
    return max(compute, memory)


def _pass_time(gemms: list[Gemm], elem_bytes: float, kernels: int, gpu: GpuKind, peak: float,
               efficiency: float, element: int) -> float:
    gemm_s = sum(_gemm_time(g, gpu, peak, efficiency, element) for g in gemms)
    return gemm_s + elem_bytes / gpu.memory_bandwidth_bytes_per_s + kernels * KERNEL_LAUNCH_S


def _backward_gemms(gemms: list[Gemm]) -> list[Gemm]:
    return [g2 for g in gemms for g2 in g.transposed_for_backward()]


def _solve_efficiency(target_s: float, time_at: "callable") -> float:
    """Bisect the GEMM efficiency in (0, 1] that makes ``time_at`` hit ``target_s``."""
    low, high = 1e-3, 1.0
    if time_at(high) > target_s:
        raise ValueError(f"calibration target {target_s} s is below the model's floor")
    for _ in range(80):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if time_at(mid) > target_s else (low, mid)
    return 0.5 * (low + high)


def layer_efficiency() -> tuple[float, float]:
    """GEMM efficiency (forward, backward) that makes one GPT3-XL layer on a V100 take docs/facts.md §2's
    per-layer figures (the source of ``GEMM_EFFICIENCY``): Megatron's layer, which that run timed."""
    gpu, model, element = gpu_kind("V100-SXM2-16GB"), gpt3_xl(), PRECISIONS["fp16"]
    peak = gpu.peak_flops_per_s("fp16")
    gemms = layer_gemms(model, 1, 1)
    elem = layer_elementwise_bytes(model, 1, 1, element)
    summed = model.layer_params_per_shard(1) * MEGATRON_LAYER.grad_accumulation_bytes_per_param
    fwd = _solve_efficiency(V100_LAYER_FORWARD_S, lambda e: _pass_time(
        gemms, elem, MEGATRON_LAYER.forward_kernels, gpu, peak, e, element))
    bwd = _solve_efficiency(V100_LAYER_BACKWARD_S, lambda e: _pass_time(
        _backward_gemms(gemms), 2 * elem + summed, MEGATRON_LAYER.backward_kernels, gpu, peak, e, element))
    return fwd, bwd


def layer_times(gpu: GpuKind, model: ModelSpec, training: TrainingSpec, tp: int,
                efficiency: tuple[float, float] | None = None, kernels: LayerKernels = MEGATRON_LAYER) -> LayerTimes:
    """One layer shard, one micro-batch, compute only (tensor-parallel communication is separate),
    written as ``kernels`` says; the backward also sums the weight gradients into their buffers."""
    element = training.element_bytes
    peak = gpu.peak_flops_per_s(training.precision)
    eff_fwd, eff_bwd = efficiency or GEMM_EFFICIENCY
    gemms = layer_gemms(model, training.micro_batch, tp, kernels.fused)
    elem = layer_elementwise_bytes(model, training.micro_batch, tp, element, kernels.fused)
    summed = model.layer_params_per_shard(tp) * kernels.grad_accumulation_bytes_per_param
    forward = _pass_time(gemms, elem, kernels.forward_kernels, gpu, peak, eff_fwd, element)
    backward = _pass_time(_backward_gemms(gemms), 2 * elem + summed, kernels.backward_kernels, gpu, peak, eff_bwd,
                          element)
    return LayerTimes(forward_s=forward, backward_s=backward,
                      recompute_s=forward if training.activation_recompute else 0.0)


def head_times(gpu: GpuKind, model: ModelSpec, training: TrainingSpec, tp: int,
               efficiency: tuple[float, float] | None = None) -> tuple[float, float]:
    """Output projection + cross entropy (vocabulary-parallel over tp), forward and backward.
    The loss runs in fp32 over the logits: read fp16, write fp32 softmax, read it back for the
    gradient (Megatron's vocab-parallel cross entropy)."""
    element = training.element_bytes
    peak = gpu.peak_flops_per_s(training.precision)
    eff_fwd, eff_bwd = efficiency or GEMM_EFFICIENCY
    tokens = training.micro_batch * model.seq_len
    gemm = Gemm(tokens, model.vocab // tp, model.d_model)
    logits = tokens * (model.vocab // tp)
    bandwidth = gpu.memory_bandwidth_bytes_per_s
    forward = (_gemm_time(gemm, gpu, peak, eff_fwd, element) + logits * (element + 4 + 4) / bandwidth
               + 4 * KERNEL_LAUNCH_S)
    backward = (sum(_gemm_time(g, gpu, peak, eff_bwd, element) for g in gemm.transposed_for_backward())
                + logits * (4 + element) / bandwidth + 4 * KERNEL_LAUNCH_S)
    return forward, backward


def adaptive_clusters(model: ModelSpec, cutoffs: tuple[int, ...], div_value: int) -> tuple[int, list[tuple[int, int]]]:
    """An adaptive softmax's head size (the shortlist and one entry per tail cluster) and each tail
    cluster's (projection width, vocabulary span), as torch.nn.AdaptiveLogSoftmaxWithLoss builds them."""
    bounds = [*cutoffs, model.vocab]
    tails = [(max(1, model.d_model // div_value ** (i + 1)), bounds[i + 1] - bounds[i]) for i in range(len(cutoffs))]
    return cutoffs[0] + len(cutoffs), tails


def adaptive_head_times(gpu: GpuKind, model: ModelSpec, training: TrainingSpec, cutoffs: tuple[int, ...],
                        div_value: int, efficiency: tuple[float, float] | None = None) -> tuple[float, float]:
    """The study's output head (its final layer norm and an adaptive softmax, run under a
    checkpoint), forward and backward with its recompute. Every token is costed through every tail
    cluster, an upper bound: torch computes a cluster only for the tokens whose target falls in it."""
    element = training.element_bytes
    peak = gpu.peak_flops_per_s(training.precision)
    eff_fwd, eff_bwd = efficiency or GEMM_EFFICIENCY
    tokens, h = training.micro_batch * model.seq_len, model.d_model
    head, tails = adaptive_clusters(model, cutoffs, div_value)
    gemms = [Gemm(tokens, head, h)] + [g for width, span in tails for g in (Gemm(tokens, width, h), Gemm(tokens, span, width))]
    outputs = head + sum(span for _, span in tails)
    elem = 2 * tokens * h * element + 2 * tokens * outputs * element  # final layer norm; log-softmaxes
    kernels = 4 + 3 * len(tails)
    forward = _pass_time(gemms, elem, kernels, gpu, peak, eff_fwd, element)
    backward = _pass_time(_backward_gemms(gemms), 2 * elem, 2 * kernels, gpu, peak, eff_bwd, element)
    return forward, backward + (forward if training.activation_recompute else 0.0)


def embedding_times(gpu: GpuKind, model: ModelSpec, training: TrainingSpec, tp: int) -> tuple[float, float]:
    """Token + position lookup forward; backward accumulates into the dense (vocab/tp)×h gradient."""
    element = training.element_bytes
    activation = training.micro_batch * model.seq_len * model.d_model * element
    table = (model.vocab // tp) * model.d_model * element
    bandwidth = gpu.memory_bandwidth_bytes_per_s
    return 3 * activation / bandwidth + 2 * KERNEL_LAUNCH_S, (table + 2 * activation) / bandwidth + 2 * KERNEL_LAUNCH_S


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCompute:
    """A device kind's compute for one job, one micro-batch: from its profile where one is given
    (measured), from the datasheet model otherwise."""

    layer: LayerTimes
    embedding: tuple[float, float]  # forward, backward
    head: tuple[float, float]
    optimizer_s_per_param: float
    optimizer_overhead_s: float

    def optimizer_s(self, params: float) -> float:
        """The optimizer's step (docs/facts.md §1: plain SGD) over this device's parameters: memory-bound."""
        return params * self.optimizer_s_per_param + self.optimizer_overhead_s


@lru_cache(maxsize=4096)  # a search asks for the same few kinds, shards and stages over and over
def _datasheet_compute(kind: str, model: ModelSpec, training: TrainingSpec, tp: int,
                       efficiency: tuple[float, float] | None, kernels: LayerKernels,
                       head_cutoffs: tuple[int, ...] | None, div_value: int) -> DeviceCompute:
    gpu = gpu_kind(kind)
    state = OPTIMIZER_STATE_BYTES[training.optimizer]
    head = (head_times(gpu, model, training, tp, efficiency) if head_cutoffs is None
            else adaptive_head_times(gpu, model, training, head_cutoffs, div_value, efficiency))
    return DeviceCompute(layer=layer_times(gpu, model, training, tp, efficiency, kernels),
                         embedding=embedding_times(gpu, model, training, tp), head=head,
                         optimizer_s_per_param=(OPTIMIZER_BYTES_PER_PARAM + 2 * state) / gpu.memory_bandwidth_bytes_per_s,
                         optimizer_overhead_s=KERNEL_LAUNCH_S)


def profile_for(kind: str, profiles: tuple[Profile, ...]) -> Profile | None:
    return next((p for p in profiles if p.device_kind == kind), None)


def device_compute(kind: str, model: ModelSpec, training: TrainingSpec, tp: int, profiles: tuple[Profile, ...] = (),
                   efficiency: tuple[float, float] | None = None, kernels: LayerKernels = MEGATRON_LAYER,
                   head_cutoffs: tuple[int, ...] | None = None, div_value: int = 4) -> DeviceCompute:
    """``kernels``: how the runtime writes its layer; ``head_cutoffs``: the output head is an
    adaptive softmax with these cutoffs (the study's runtime), not a projection onto the whole
    vocabulary. A profile measured its own layer and head."""
    profile = profile_for(kind, profiles)
    state = OPTIMIZER_STATE_BYTES[training.optimizer]
    if profile is None:
        return _datasheet_compute(kind, model, training, tp, efficiency, kernels, head_cutoffs, div_value)
    profile.check_covers(model, training.precision)
    forward, backward, recompute = profile.layer(tp, training.micro_batch)
    # The profile times plain SGD over parameters of its dtype: 3 bytes moved (parameter and
    # gradient read, parameter written) per parameter byte. The job's step moves
    # OPTIMIZER_BYTES_PER_PARAM plus its state twice, at the same rate per byte.
    per_moved_byte = profile.optimizer_s_per_param_byte / 3
    return DeviceCompute(layer=LayerTimes(forward_s=forward, backward_s=backward,
                                          recompute_s=recompute if training.activation_recompute else 0.0),
                         embedding=profile.embedding_times(tp, training.micro_batch),
                         head=profile.head_times(tp, training.micro_batch),
                         optimizer_s_per_param=per_moved_byte * (OPTIMIZER_BYTES_PER_PARAM + 2 * state),
                         optimizer_overhead_s=0.0)
