"""How long a GPU takes for one layer, the embedding, the output head and the optimizer step.

Model: every matrix multiply is a roofline over its FLOPs and bytes, with cuBLAS's tile and wave
quantisation (NVIDIA "Matrix Multiplication Background" user's guide: a GEMM runs as 128×128
output tiles spread over the SMs in waves, so small or odd shapes leave SMs idle), plus the
memory-bound element-wise kernels (softmax, layer norm, GELU, dropout, residual) and a launch
cost per kernel. One efficiency factor each for forward and backward scales the GEMM peak; it is
solved so that the simulator reproduces the measured Megatron iteration on one p3.16xlarge (FACTS.md
§2: 4.23 s with recompute, 3.10 s without; see simulator.calibration), and carried over to the
datasheet GPU kinds. Tensor-parallel shards then
run slower than 1/t of a full layer because their GEMMs are smaller and launches stay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from profiler.gpus import GpuKind, gpu_kind
from profiler.model import ModelSpec, OPTIMIZER_STATE_BYTES, PRECISIONS, TrainingSpec, gpt3_xl
from profiler.profile import Profile

TILE = 128  # output tile edge of cuBLAS's large half-precision kernels (NVIDIA GEMM guide)
KERNEL_LAUNCH_S = 5e-6  # CUDA kernel launch + tail, a commonly measured few µs per kernel
FORWARD_KERNELS = 20  # kernels of one Megatron layer forward: 6 GEMMs + fused element-wise ones
BACKWARD_KERNELS = 40  # roughly twice the forward's
# FACTS.md §2: V100, GPT3-XL layer, one 2048-token sequence, fp16: forward 5.3 ms, backward 9.3 ms.
V100_LAYER_FORWARD_S = 5.3e-3
V100_LAYER_BACKWARD_S = 9.3e-3
# SGD step on the fp32 master copy: read the fp16 gradient (2 B) and the master (4 B), write the
# master (4 B) and the fp16 weight (2 B); optimizer state is read and written once more.
OPTIMIZER_BYTES_PER_PARAM = 12


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


def layer_gemms(model: ModelSpec, micro_batch: int, tp: int) -> list[Gemm]:
    """The forward GEMMs of one layer's 1/tp shard (Megatron's column/row split)."""
    tokens, h, f = micro_batch * model.seq_len, model.d_model, model.ffn
    heads = model.heads // tp
    head_dim = h // model.heads
    s = model.seq_len
    return [Gemm(tokens, 3 * h // tp, h),  # QKV projection, column-parallel
            Gemm(s, s, head_dim, micro_batch * heads),  # scores Q·Kᵀ per head
            Gemm(s, head_dim, s, micro_batch * heads),  # scores · V
            Gemm(tokens, h, h // tp),  # attention output, row-parallel
            Gemm(tokens, f // tp, h),  # FFN in, column-parallel
            Gemm(tokens, h, f // tp)]  # FFN out, row-parallel


def layer_elementwise_bytes(model: ModelSpec, micro_batch: int, tp: int, element: int) -> float:
    """Bytes moved by the memory-bound kernels of one layer shard's forward."""
    tokens, h, f = micro_batch * model.seq_len, model.d_model, model.ffn
    scores = micro_batch * (model.heads // tp) * model.seq_len ** 2
    softmax = scores * (2 * element + 1 + 2 * element)  # scale-mask-softmax, dropout mask + apply
    norms = 2 * 2 * tokens * h * element  # two layer norms, read + write
    gelu = 2 * tokens * (f // tp) * element  # fused bias + GELU
    residual = 2 * tokens * h * (3 * element + 1)  # two bias-dropout-add: 2 reads, 1 write, mask
    return float(softmax + norms + gelu + residual)


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
    """GEMM efficiency (forward, backward) that makes one GPT3-XL layer on a V100 take FACTS.md §2's
    per-layer figures. Those figures spread the whole measured iteration over the layers, head
    and pipeline fill included, so this is only the starting point of the full calibration
    (simulator.calibration)."""
    gpu, model, element = gpu_kind("V100-SXM2-16GB"), gpt3_xl(), PRECISIONS["fp16"]
    peak = gpu.peak_flops_per_s("fp16")
    gemms = layer_gemms(model, 1, 1)
    elem = layer_elementwise_bytes(model, 1, 1, element)
    fwd = _solve_efficiency(V100_LAYER_FORWARD_S, lambda e: _pass_time(
        gemms, elem, FORWARD_KERNELS, gpu, peak, e, element))
    bwd = _solve_efficiency(V100_LAYER_BACKWARD_S, lambda e: _pass_time(
        _backward_gemms(gemms), 2 * elem, BACKWARD_KERNELS, gpu, peak, e, element))
    return fwd, bwd


@lru_cache(maxsize=1)
def calibrated_efficiency() -> tuple[float, float]:
    """GEMM efficiency (forward, backward) that reproduces FACTS.md §2's measured iterations."""
    from simulator.calibration import solve_efficiency  # it simulates, so it sits above this module

    return solve_efficiency()


def layer_times(gpu: GpuKind, model: ModelSpec, training: TrainingSpec, tp: int,
                efficiency: tuple[float, float] | None = None) -> LayerTimes:
    """One layer shard, one micro-batch, compute only (tensor-parallel communication is separate)."""
    element = training.element_bytes
    peak = gpu.peak_flops_per_s(training.precision)
    eff_fwd, eff_bwd = efficiency or calibrated_efficiency()
    gemms = layer_gemms(model, training.micro_batch, tp)
    elem = layer_elementwise_bytes(model, training.micro_batch, tp, element)
    forward = _pass_time(gemms, elem, FORWARD_KERNELS, gpu, peak, eff_fwd, element)
    backward = _pass_time(_backward_gemms(gemms), 2 * elem, BACKWARD_KERNELS, gpu, peak, eff_bwd, element)
    return LayerTimes(forward_s=forward, backward_s=backward,
                      recompute_s=forward if training.activation_recompute else 0.0)


def head_times(gpu: GpuKind, model: ModelSpec, training: TrainingSpec, tp: int,
               efficiency: tuple[float, float] | None = None) -> tuple[float, float]:
    """Output projection + cross entropy (vocabulary-parallel over tp), forward and backward.
    The loss runs in fp32 over the logits: read fp16, write fp32 softmax, read it back for the
    gradient (Megatron's vocab-parallel cross entropy)."""
    element = training.element_bytes
    peak = gpu.peak_flops_per_s(training.precision)
    eff_fwd, eff_bwd = efficiency or calibrated_efficiency()
    tokens = training.micro_batch * model.seq_len
    gemm = Gemm(tokens, model.vocab // tp, model.d_model)
    logits = tokens * (model.vocab // tp)
    bandwidth = gpu.memory_bandwidth_bytes_per_s
    forward = (_gemm_time(gemm, gpu, peak, eff_fwd, element) + logits * (element + 4 + 4) / bandwidth
               + 4 * KERNEL_LAUNCH_S)
    backward = (sum(_gemm_time(g, gpu, peak, eff_bwd, element) for g in gemm.transposed_for_backward())
                + logits * (4 + element) / bandwidth + 4 * KERNEL_LAUNCH_S)
    return forward, backward


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
        """The optimizer's step (FACTS.md §1: plain SGD) over this device's parameters: memory-bound."""
        return params * self.optimizer_s_per_param + self.optimizer_overhead_s


def profile_for(kind: str, profiles: tuple[Profile, ...]) -> Profile | None:
    return next((p for p in profiles if p.device_kind == kind), None)


def device_compute(kind: str, model: ModelSpec, training: TrainingSpec, tp: int, profiles: tuple[Profile, ...] = (),
                   efficiency: tuple[float, float] | None = None) -> DeviceCompute:
    profile = profile_for(kind, profiles)
    state = OPTIMIZER_STATE_BYTES[training.optimizer]
    if profile is None:
        gpu = gpu_kind(kind)
        return DeviceCompute(layer=layer_times(gpu, model, training, tp, efficiency),
                             embedding=embedding_times(gpu, model, training, tp),
                             head=head_times(gpu, model, training, tp, efficiency),
                             optimizer_s_per_param=(OPTIMIZER_BYTES_PER_PARAM + 2 * state) / gpu.memory_bandwidth_bytes_per_s,
                             optimizer_overhead_s=KERNEL_LAUNCH_S)
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
