"""Peak memory of every device under a placement: weights, gradients, master copy, optimizer
state, and the activations the schedule holds at once. A plan that does not fit is rejected."""

from __future__ import annotations

from dataclasses import dataclass

from profiler.gpus import gpu_kind
from profiler.model import OPTIMIZER_STATE_BYTES
from scheduler.placement import Placement, Runtime, Sync
from scheduler.runtimes import TRAITS
from scheduler.runtimes import in_flight as runtime_in_flight
from simulator.cost.compute import profile_for
from simulator.cost.job import Job, stage_params

MASTER_BYTES_PER_PARAM = 4  # fp32 master weights of mixed precision (docs/facts.md §1)
# CUDA context, cuBLAS workspace and allocator slack of a PyTorch process: nvidia-smi shows
# roughly 0.3-0.5 GiB before the first tensor on a V100; we reserve the upper figure.
RESERVED_BYTES = 0.5 * 2**30


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceMemory:
    device: int
    weights_bytes: float  # weights + gradients + master + optimizer state
    activations_bytes: float
    total_bytes: float
    capacity_bytes: float

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes


def layer_activation_bytes(job: Job, tp: int) -> float:
    """All activations one layer keeps for its backward, one micro-batch, in the job's precision
    (profiler.model.ModelSpec.layer_activation_bytes: Korthikanti et al. 2022, eq. 2)."""
    return job.model.layer_activation_bytes(job.training.micro_batch, job.training.element_bytes, tp)


def in_flight(job: Job, placement: Placement, stage: int) -> int:
    """Micro-batches whose activations a stage holds at its peak (scheduler.runtimes.in_flight)."""
    return runtime_in_flight(placement, stage, job.micro_batches(placement), job.rounds(placement))


def stage_memory(job: Job, placement: Placement, stage: int) -> tuple[float, float]:
    """(weight-related bytes, activation bytes) on each device of a stage at its peak: during the
    schedule (activations held), or at the optimizer step, when the activations are freed but a
    runtime may allocate fp32 copies of the gradients (reported as activation bytes then).

    Weights and gradients are in the model's precision; the fp32 master weights, the fp32 copies
    of the gradients the step reads and the optimizer state stay in host memory when offloaded.
    The study's sharded server also keeps a gradient-sized buffer of the shards it receives."""
    traits = TRAITS[placement.runtime]
    training, model = job.training, job.model
    params = stage_params(job, placement, stage, traits)
    element = training.element_bytes
    master = 0 if element == 4 or job.offloaded(placement) else MASTER_BYTES_PER_PARAM
    master_grads = master if placement.runtime is Runtime.DECENTRALIZED else 0  # its fp32 master .grad
    per_param = 2 * element + master + master_grads + (0 if job.offloaded(placement) else
                                                       OPTIMIZER_STATE_BYTES[training.optimizer])
    if placement.sync is Sync.SHARDED and placement.dp > 1:
        per_param += element
    start, end = placement.stage_layers[stage]
    layers = end - start
    held = in_flight(job, placement, stage)
    boundary = model.activation_bytes(training.micro_batch, training.precision)
    full_layer = layer_activation_bytes(job, placement.tp)
    if not training.activation_recompute:
        stored, working = held * layers * full_layer, 0.0
    else:
        stored, working = held * layers * traits.checkpoint_tensors_per_layer * boundary, full_layer
    stored += held * traits.stage_buffers_per_micro_batch * boundary
    if stage == placement.pp - 1 and job.head_cutoffs(placement) is None:
        # fp16 logits, their fp32 softmax and its gradient, for the micro-batch being processed
        logits = training.micro_batch * model.seq_len * model.vocab / placement.tp
        working += logits * (element + 4 + 4)
    at_step = 4 * params if traits.fp32_grad_copy_at_step and element < 4 else 0.0
    return params * per_param, max(stored + working, at_step)


def memory_report(job: Job, placement: Placement) -> list[DeviceMemory]:
    report = []
    for s in range(placement.pp):
        weights, activations = stage_memory(job, placement, s)
        for group in placement.devices[s]:
            for device in group:
                capacity = device_memory_bytes(job.cluster.devices[device].gpu, job.profiles)
                report.append(DeviceMemory(device=device, weights_bytes=weights, activations_bytes=activations,
                                           total_bytes=weights + activations + RESERVED_BYTES,
                                           capacity_bytes=capacity))
    return sorted(report, key=lambda d: d.device)


def device_memory_bytes(kind: str, profiles) -> float:
    """The memory a device kind has: its profile's measurement, or its datasheet's."""
    profile = profile_for(kind, profiles)
    return profile.memory_bytes if profile else gpu_kind(kind).memory_bytes
