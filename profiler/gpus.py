"""GPU kinds: datasheet numbers until a profile replaces them.

Peak figures are dense (no structured sparsity) tensor-core throughput with fp32 accumulation,
which is what mixed-precision training uses. Memory is what the card has; the usable share is
decided by the memory model. Each entry names its datasheet.
"""

from __future__ import annotations

from dataclasses import dataclass

from profiler.errors import InputError

GB = 1e9
GIB = 2**30
TFLOPS = 1e12


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuKind:
    name: str
    peak_fp16_flops_per_s: float
    peak_bf16_flops_per_s: float  # 0 where the card has no bf16 tensor cores
    peak_fp32_flops_per_s: float
    memory_bytes: float
    memory_bandwidth_bytes_per_s: float
    sm_count: int
    source: str  # where the numbers come from

    def __post_init__(self) -> None:
        for key in ("peak_fp16_flops_per_s", "peak_fp32_flops_per_s", "memory_bytes",
                    "memory_bandwidth_bytes_per_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"GPU kind {self.name!r}: {key} must be positive")
        if self.sm_count < 1:
            raise ValueError(f"GPU kind {self.name!r}: sm_count must be >= 1")

    def peak_flops_per_s(self, precision: str) -> float:
        peak = {"fp16": self.peak_fp16_flops_per_s, "bf16": self.peak_bf16_flops_per_s,
                "fp32": self.peak_fp32_flops_per_s}[precision]
        if peak <= 0:
            raise InputError(f"GPU kind {self.name!r} has no {precision} tensor cores")
        return peak


_KINDS = (
    # docs/facts.md §2 (NVIDIA V100 datasheet): 125 TFLOP/s fp16 tensor, 15.7 fp32, 16 GB HBM2, 900 GB/s.
    # Of the 16 GiB, nvidia-smi reports 16,160 MiB usable.
    GpuKind(name="V100-SXM2-16GB", peak_fp16_flops_per_s=125 * TFLOPS, peak_bf16_flops_per_s=0.0,
            peak_fp32_flops_per_s=15.7 * TFLOPS, memory_bytes=16160 * 2**20,
            memory_bandwidth_bytes_per_s=900 * GB, sm_count=80,
            source="docs/facts.md §2 / NVIDIA V100 datasheet"),
    # NVIDIA A100 datasheet (SXM): 312 TFLOP/s fp16/bf16 dense, 19.5 fp32, 1,555 / 2,039 GB/s.
    GpuKind(name="A100-40GB", peak_fp16_flops_per_s=312 * TFLOPS, peak_bf16_flops_per_s=312 * TFLOPS,
            peak_fp32_flops_per_s=19.5 * TFLOPS, memory_bytes=40 * GIB,
            memory_bandwidth_bytes_per_s=1555 * GB, sm_count=108,
            source="NVIDIA A100 datasheet (SXM4 40GB)"),
    GpuKind(name="A100-80GB", peak_fp16_flops_per_s=312 * TFLOPS, peak_bf16_flops_per_s=312 * TFLOPS,
            peak_fp32_flops_per_s=19.5 * TFLOPS, memory_bytes=80 * GIB,
            memory_bandwidth_bytes_per_s=2039 * GB, sm_count=108,
            source="NVIDIA A100 datasheet (SXM4 80GB)"),
    # NVIDIA H100 datasheet (SXM5): 989 TFLOP/s fp16/bf16 dense (1,979 with sparsity), 67 fp32, 3.35 TB/s.
    GpuKind(name="H100-80GB", peak_fp16_flops_per_s=989 * TFLOPS, peak_bf16_flops_per_s=989 * TFLOPS,
            peak_fp32_flops_per_s=67 * TFLOPS, memory_bytes=80 * GIB,
            memory_bandwidth_bytes_per_s=3350 * GB, sm_count=132,
            source="NVIDIA H100 datasheet (SXM5)"),
    # NVIDIA L4 datasheet: 242 TFLOP/s fp16 with sparsity -> 121 dense, 30.3 fp32, 24 GB, 300 GB/s.
    GpuKind(name="L4", peak_fp16_flops_per_s=121 * TFLOPS, peak_bf16_flops_per_s=121 * TFLOPS,
            peak_fp32_flops_per_s=30.3 * TFLOPS, memory_bytes=24 * GIB,
            memory_bandwidth_bytes_per_s=300 * GB, sm_count=58, source="NVIDIA L4 datasheet"),
    # NVIDIA T4 datasheet: 65 TFLOP/s fp16 mixed precision, 8.1 fp32, 16 GB GDDR6, 320 GB/s.
    GpuKind(name="T4", peak_fp16_flops_per_s=65 * TFLOPS, peak_bf16_flops_per_s=0.0,
            peak_fp32_flops_per_s=8.1 * TFLOPS, memory_bytes=16 * GIB,
            memory_bandwidth_bytes_per_s=320 * GB, sm_count=40, source="NVIDIA T4 datasheet"),
    # NVIDIA Ampere GA102 whitepaper, RTX 3090: 71 TFLOP/s fp16 tensor with fp16 accumulate, half
    # that (35.6) with fp32 accumulate on GeForce cards; 35.6 fp32; 24 GB GDDR6X at 936 GB/s.
    GpuKind(name="RTX-3090", peak_fp16_flops_per_s=35.6 * TFLOPS, peak_bf16_flops_per_s=35.6 * TFLOPS,
            peak_fp32_flops_per_s=35.6 * TFLOPS, memory_bytes=24 * GIB,
            memory_bandwidth_bytes_per_s=936 * GB, sm_count=82,
            source="NVIDIA GA102 whitepaper (fp32 accumulate)"),
    # NVIDIA Ada whitepaper, RTX 4090: 165.2 TFLOP/s fp16 tensor fp16-acc dense, 82.6 with fp32
    # accumulate; 82.6 fp32; 24 GB GDDR6X at 1,008 GB/s.
    GpuKind(name="RTX-4090", peak_fp16_flops_per_s=82.6 * TFLOPS, peak_bf16_flops_per_s=82.6 * TFLOPS,
            peak_fp32_flops_per_s=82.6 * TFLOPS, memory_bytes=24 * GIB,
            memory_bandwidth_bytes_per_s=1008 * GB, sm_count=128,
            source="NVIDIA AD102 whitepaper (fp32 accumulate)"),
)

GPU_KINDS: dict[str, GpuKind] = {kind.name: kind for kind in _KINDS}
# Kinds a cluster may name that have no datasheet model here: only a profile of their own
# (`profiler compute --device cpu`) predicts them. A CPU's throughput depends on its cores,
# threads and BLAS far more than any one figure could say.
PROFILE_ONLY_KINDS = ("CPU",)


def gpu_kind(name: str) -> GpuKind:
    try:
        return GPU_KINDS[name]
    except KeyError:
        if name in PROFILE_ONLY_KINDS:
            raise InputError(f"device kind {name!r} has no datasheet model: measure it with "
                             f"`profiler compute --device {name.lower()}` and pass the profile with --profile") from None
        known = ", ".join(GPU_KINDS)
        raise InputError(f"unknown GPU kind {name!r} (known: {known})") from None
