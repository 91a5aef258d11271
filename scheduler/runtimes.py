"""What each runtime really does, as numbers the lowering, the cost tables, the memory model and
the executor read: its streams, checkpoints and buffers, its gradient-accumulation rounds, how its
layer is written (the kernels the compute model counts), and the chunks NCCL moves."""

from __future__ import annotations

from dataclasses import dataclass

from profiler.model import ModelSpec
from scheduler.placement import Placement, Runtime, Schedule

NCCL_STEPS = 8  # buffer slots of a connection (NCCL src/include/device.h)
NCCL_CHUNK_BYTES = 4 * 2**20 / NCCL_STEPS  # one slot: NCCL_BUFFSIZE (4 MiB) over NCCL_STEPS
FORWARD_KERNELS = 20  # kernels of one Megatron layer forward: 6 GEMMs + fused element-wise ones
BACKWARD_KERNELS = 40  # roughly twice the forward's

# The study's runtime runs each pipeline's share of the batch in rounds of 64 micro-batches
# (its run scripts: --batch-size 64 --gradient-accumulate-step g; docs/facts.md §4).
STUDY_ROUND_MICRO_BATCHES = 64
# Its output head (modules/task_modules.py: Seq2SeqClassification) is torch's
# AdaptiveLogSoftmaxWithLoss over the vocabulary with cutoffs [1000, 2000, 5000] (div_value 4):
# a 1003-way head and three tail clusters behind projections to d/4, d/16 and d/64.
STUDY_HEAD_CUTOFFS = (1000, 2000, 5000)
ADAPTIVE_DIV_VALUE = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerKernels:
    """How a runtime's layer is written, as the compute model counts it: Megatron's fused kernels
    (one QKV projection, fused scale-mask-softmax, bias-GELU, bias-dropout-add; gradients summed
    into fp32 main_grad buffers) or the study's plain PyTorch modules (modules/gpt_modules.py:
    separate q, k, v projections whose biases addmm copies out first, transposed heads copied for
    the batched products, scale and softmax as passes of their own, ReLU, no dropout; gradients
    summed by autograd into fp16 .grad)."""

    fused: bool
    forward_kernels: int
    backward_kernels: int
    grad_accumulation_bytes_per_param: int  # read the sum and the new gradient, write the sum, per micro-batch


# Megatron: 6 GEMMs + fused element-wise kernels, backward about twice as many; main_grad (4 B)
# += grad (2 B). The study: 21 kernels forward (2 norms, 4 + 2 addmm with their bias copies, 3 head
# copies, 2 bmm, scale, softmax, a copy, ReLU, 2 adds), twice as many backward; fp16 grad += grad.
MEGATRON_LAYER = LayerKernels(fused=True, forward_kernels=FORWARD_KERNELS, backward_kernels=BACKWARD_KERNELS,
                              grad_accumulation_bytes_per_param=4 + 2 + 4)
STUDY_LAYER = LayerKernels(fused=False, forward_kernels=21, backward_kernels=42,
                           grad_accumulation_bytes_per_param=2 + 2 + 2)



@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeTraits:
    overlap_p2p: bool  # transfers run on their own streams, overlapping compute
    checkpoint_tensors_per_layer: int  # boundary-sized tensors a checkpointed layer keeps per micro-batch
    stage_buffers_per_micro_batch: int  # boundary-sized buffers a stage keeps per micro-batch of a round
    tied_embedding: bool  # first and last stage all-reduce the shared word embedding
    fp32_grad_copy_at_step: bool  # the optimizer step makes fp32 copies of fp16 gradients
    # Gradient-accumulation rounds of at most this many micro-batches, each all forwards, a
    # barrier across all ranks, all backwards; the iteration ends with the sync, the step and a
    # barrier (None: one schedule over every micro-batch, no barriers).
    round_micro_batches: int | None
    offload_by_default: bool  # fp32 master weights and the SGD step on the host unless told otherwise
    head_cutoffs: tuple[int, ...] | None  # adaptive-softmax head; None: a projection onto the whole vocabulary
    layer: LayerKernels  # how its layer is written (the compute model counts it)


TRAITS = {
    # Megatron-LM as the study ran it (docs/facts.md §4): blocking batched isend/irecv between stages
    # (no overlap), fp16 gradients all-reduced after the backward pass, one checkpoint (the
    # layer's input) per layer (its default --checkpoint-num-layers 1), word embedding tied to the
    # output head; its fp16 optimizer sets main_param.grad = model_param.grad.float() before the
    # step (4 B more each).
    Runtime.MEGATRON: RuntimeTraits(overlap_p2p=False, checkpoint_tensors_per_layer=1, stage_buffers_per_micro_batch=0,
                                    tied_embedding=True, fp32_grad_copy_at_step=True, round_micro_batches=None,
                                    offload_by_default=False, head_cutoffs=None, layer=MEGATRON_LAYER),
    # The study's runtime (DS3Lab/DT-FM, docs/facts.md §4): separate compute / send / receive streams;
    # the model cast to fp16, so its gradients are fp16 too; each layer checkpoints its attention
    # and its MLP (modules/gpt_modules.py), keeping per micro-batch both blocks' inputs and both
    # layer norms' inputs; a stage keeps every micro-batch of a round's received activation's
    # gradient, its received gradient and its output (pipeline_parallel/dist_gpipe_pipeline_async.py);
    # the first stage holds the embedding, the last its own adaptive-softmax head.
    Runtime.DECENTRALIZED: RuntimeTraits(overlap_p2p=True, checkpoint_tensors_per_layer=4,
                                         stage_buffers_per_micro_batch=3, tied_embedding=False,
                                         fp32_grad_copy_at_step=False, round_micro_batches=STUDY_ROUND_MICRO_BATCHES,
                                         offload_by_default=True, head_cutoffs=STUDY_HEAD_CUTOFFS,
                                         layer=STUDY_LAYER),
}


def accumulation_rounds(runtime: Runtime, micro_batches: int, rounds: int | None = None) -> tuple[tuple[int, int], ...]:
    """The [start, end) micro-batches of each gradient-accumulation round a pipeline runs: one for
    a runtime without rounds (Megatron's 1F1B runs them all in one schedule); for the study's
    runtime ``rounds`` of them, or as many as keep each within its round size, as even as the
    micro-batches allow. ValueError if there are more rounds than micro-batches."""
    size = TRAITS[runtime].round_micro_batches
    if size is None:
        return ((0, micro_batches),)
    count = rounds or -(-micro_batches // size)
    if count > micro_batches:
        raise ValueError(f"{count} rounds of gradient accumulation need at least as many micro-batches, "
                         f"a pipeline has {micro_batches}")
    bounds = [i * micro_batches // count for i in range(count + 1)]
    return tuple(zip(bounds, bounds[1:]))


def ties_embedding(runtime: Runtime, model: ModelSpec) -> bool:
    """Whether the output head is the token embedding: as the model says where it says
    (tied_embedding), as the runtime does otherwise (Megatron ties, the study's does not); never
    with an adaptive-softmax head, which is no projection onto the vocabulary."""
    traits = TRAITS[runtime]
    if traits.head_cutoffs is not None:
        return False
    return traits.tied_embedding if model.tied_embedding is None else model.tied_embedding


def in_flight(placement: Placement, stage: int, micro_batches: int, rounds: tuple[tuple[int, int], ...]) -> int:
    """Micro-batches whose activations a stage holds at its peak: all of a round's under GPipe
    (``rounds``: accumulation_rounds), the warm-up depth plus one under 1F1B."""
    if placement.schedule is Schedule.GPIPE:
        return max(end - start for start, end in rounds)
    return min(placement.pp - stage, micro_batches)
