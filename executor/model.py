"""A plan's stage as torch modules, built from the profiler's GPT parts (profiler/gpt.py), and the
seeded synthetic data every placement of a plan sees alike.

Every part is initialised from its own seed (the run's seed and the part's index), so a stage's
weights do not depend on how the layers were split: a pipelined, data-parallel run and one
process holding the whole model start from the same weights and see the same tokens. Dropout is
off, so both compute the same numbers; its masks cost little beside the GEMMs.

A plan in fp16 or bf16 runs its forwards under autocast to that type (the GEMMs in it, on a GPU's
tensor cores) and sends its activations and their gradients in it, as the simulator counts them;
the weights, their gradients and the sync stay in fp32 (no loss scaling: fp16 gradients may
underflow, which changes no timing; the simulator's Megatron runtime counts its sync at 2 bytes a
parameter, so such a run's sync moves twice what it predicts).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from profiler.gpt import GPTEmbedding, GPTHead, GPTLayerShard
from profiler.model import ModelSpec

EMBEDDING, HEAD = -1, -2  # part indices of the embedding and the head beside layers 0..L-1
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _seeded(seed: int, part: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + part + 2)


def _part(model: ModelSpec, part: int, seed: int, tied: bool = False) -> nn.Module:
    """The whole part, seeded on its own; with ``tied`` the head's projection starts as the token
    embedding's weights (Megatron's tied word embedding)."""
    fork = _seeded(seed, part)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=fork)))
        if part == EMBEDDING:
            return GPTEmbedding(model.vocab, model.d_model, model.seq_len, dropout=0.0,
                                learned=model.position == "learned")
        if part == HEAD:
            head = GPTHead(model.vocab, model.d_model)
            if tied:
                with torch.no_grad():
                    head.project.weight.copy_(_part(model, EMBEDDING, seed).tokens.weight)
            return head
        return GPTLayerShard.of(model, dropout=0.0)


class Stage(nn.Module):
    """Layers [start, end) of the model, with the embedding in front on the first stage and the
    head (and loss) behind on the last (with ``tied``, the head's projection is the token
    embedding's weight: one parameter on one stage, equal copies on two that all-reduce its
    gradient). With ``recompute`` each layer keeps only its input for the
    backward and runs its forward again there (activation checkpointing). With ``tp`` > 1 this is
    tensor-parallel rank ``tp_rank``'s shard of every part, joined over ``tp_group``
    (executor.tensor_parallel)."""

    def __init__(self, model: ModelSpec, start: int, end: int, seed: int, recompute: bool, tp: int = 1,
                 tp_rank: int = 0, tp_group=None, precision: str = "fp32", tied: bool = False) -> None:
        super().__init__()
        self.activation_dtype = DTYPES[precision]  # what its pipeline transfers carry
        if tp == 1:
            shard = lambda part, whole: whole  # noqa: E731
        else:
            from executor import tensor_parallel as parallel

            makers = {EMBEDDING: parallel.ParallelEmbedding, HEAD: parallel.ParallelHead}
            shard = lambda part, whole: makers.get(part, parallel.parallel_layer)(  # noqa: E731
                whole, model, tp, tp_rank, tp_group)
        self.embedding = shard(EMBEDDING, _part(model, EMBEDDING, seed)) if start == 0 else None
        self.layers = nn.ModuleList(shard(i, _part(model, i, seed)) for i in range(start, end))
        self.head = shard(HEAD, _part(model, HEAD, seed, tied)) if end == model.layers else None
        if tied and self.embedding is not None and self.head is not None:  # one stage: one weight
            self.head.project.weight = self.embedding.tokens.weight
        self.recompute = recompute

    def tied_weight(self) -> nn.Parameter:
        """The word embedding's weight this stage holds: its token embedding's on the first stage,
        its output projection's on the last."""
        return self.embedding.tokens.weight if self.embedding is not None else self.head.project.weight

    def gradient_buffer(self) -> torch.Tensor:
        """One flat tensor whose slices are every parameter's gradient (made on the first call):
        the backward accumulates into it in place and the sync moves it whole, without the copies
        in and out that per-parameter gradients would cost (DDP's bucket views, Megatron's
        contiguous gradient buffer)."""
        if getattr(self, "_gradients", None) is None:
            parameters = list(self.parameters())
            self._gradients = torch.zeros(sum(p.numel() for p in parameters), dtype=parameters[0].dtype,
                                          device=parameters[0].device)
            offset = 0
            for p in parameters:
                p.grad = self._gradients[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
        return self._gradients

    def run(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """The forward in the plan's precision (autocast below fp32)."""
        if self.activation_dtype == torch.float32:
            return self(x, targets)
        with torch.autocast(device_type=x.device.type, dtype=self.activation_dtype):
            return self(x, targets)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """x: token ids (first stage) or the previous stage's activation; the loss on the last."""
        if self.embedding is not None:
            x = self.embedding(x)
        for layer in self.layers:
            x = checkpoint(layer, x, use_reentrant=False) if self.recompute and torch.is_grad_enabled() else layer(x)
        return self.head(x, targets) if self.head is not None else x


def batch(model: ModelSpec, global_batch: int, iteration: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The iteration's tokens and next-token targets, (global batch, seq) each: seeded random ids,
    the targets the ids shifted by one."""
    generator = torch.Generator().manual_seed(seed * 7919 + iteration)
    ids = torch.randint(0, model.vocab, (global_batch, model.seq_len + 1), generator=generator)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
