"""What each runtime really does, as numbers the lowering and the memory model read."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.placement import STUDY_GRAD_BYTES_PER_PARAM, Runtime


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeTraits:
    overlap_p2p: bool  # transfers run on their own streams, overlapping compute
    grad_bytes_per_param: int  # what the data-parallel sync moves and the device holds
    checkpoint_per_layer: bool  # recompute checkpoints every layer (else the whole stage)
    tied_embedding: bool  # first and last stage all-reduce the shared word embedding
    fp32_grad_copy_at_step: bool  # the optimizer step makes fp32 copies of fp16 gradients


TRAITS = {
    # Megatron-LM as the study ran it (FACTS.md §4): blocking batched isend/irecv between stages
    # (no overlap), fp16 gradients all-reduced after the backward pass, one checkpoint per layer
    # (its default --checkpoint-num-layers 1), word embedding tied to the output head; its fp16
    # optimizer sets main_param.grad = model_param.grad.float() before the step (4 B more each).
    Runtime.MEGATRON: RuntimeTraits(overlap_p2p=False, grad_bytes_per_param=2, checkpoint_per_layer=True,
                                    tied_embedding=True, fp32_grad_copy_at_step=True),
    # The study's runtime (FACTS.md §4): separate compute / send / receive streams; its cost
    # model's c_dp = 0.65e9 B for 1.3e9/8 parameters per device (FACTS.md §5) means 4 B (fp32) of
    # gradient per parameter; the first stage holds the embedding, the last its own output head.
    # GPipe holds every micro-batch's checkpoint at once, so it checkpoints each stage's input
    # only (GPipe's re-materialisation), which is what lets batch 4096 fit on a 16 GB V100.
    Runtime.DECENTRALIZED: RuntimeTraits(overlap_p2p=True, grad_bytes_per_param=STUDY_GRAD_BYTES_PER_PARAM, checkpoint_per_layer=False,
                                         tied_embedding=False, fp32_grad_copy_at_step=False),
}
