"""Megatron-LM's tensor parallelism for a stage's parts: each rank of a tensor-parallel group holds
1/t of every layer (its heads' QKV columns and attention-output rows, its FFN columns and rows), of
the token embedding's rows and of the output head's vocabulary, and the group joins them with
all-reduces: two in each layer's forward and two in its backward (`enter`: identity forward,
all-reduce of the gradient backward; `leave`: all-reduce forward, identity backward), one in the
embedding's forward, and the vocabulary-parallel cross entropy's (the max, the sum of exponentials
and the target's logit over the shards).

The shards are cut from the whole part, built from its seed, so a tensor-parallel run starts from
the same weights as one process; ``shard_indices`` says which slice of each parameter a rank
holds, for cutting and for putting the shards back together.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from profiler.gpt import GPTEmbedding, GPTHead, GPTLayerShard
from profiler.model import ModelSpec

# The all-reduce over a rank's tensor-parallel group (in place; op "sum" or "max"): torch's, or
# under --emulate-network the executor's point-to-point ring over the emulated links (``shape_with``).
_all_reduce: Callable[[torch.Tensor, object, str], None] = lambda x, group, op: dist.all_reduce(  # noqa: E731
    x, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=group)


def shape_with(all_reduce: Callable[[torch.Tensor, str], None]) -> None:
    """Run this process's tensor-parallel all-reduces through ``all_reduce(tensor, op)`` (its one
    group's: a rank belongs to one)."""
    global _all_reduce
    _all_reduce = lambda x, group, op: all_reduce(x, op)  # noqa: E731


class _Enter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        _all_reduce(grad, ctx.group, "sum")
        return grad, None


class _Leave(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        x = x.contiguous().clone()
        _all_reduce(x, group, "sum")
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def enter(group):
    return lambda x: _Enter.apply(x, group)


def leave(group):
    return lambda x: _Leave.apply(x, group)


def shard_indices(model: ModelSpec, part: str, tp: int, rank: int) -> dict[str, tuple[int, torch.Tensor]]:
    """parameter name -> (dimension, indices along it) of the 1/tp slice that tensor-parallel rank
    ``rank`` holds of a whole ``part`` ("layer", "embedding" or "head"); parameters not listed are
    held whole by every rank."""
    if part == "embedding":
        rows = model.vocab // tp
        return {"tokens.weight": (0, torch.arange(rank * rows, (rank + 1) * rows))}
    if part == "head":
        rows = model.vocab // tp
        return {"project.weight": (0, torch.arange(rank * rows, (rank + 1) * rows))}
    width, kv, ffn = model.d_model // tp, model.kv_width // tp, model.ffn // tp
    mine = torch.arange(rank * width, (rank + 1) * width)  # features of its query heads
    kv_mine = torch.arange(rank * kv, (rank + 1) * kv)  # of its key and value heads
    qkv = torch.cat([mine, model.d_model + kv_mine, model.d_model + model.kv_width + kv_mine])  # its rows of Q, K, V
    hidden = torch.arange(rank * ffn, (rank + 1) * ffn)
    if model.activation == "swiglu":  # fc1 holds the gate's rows over the up projection's
        hidden_in = torch.cat([hidden, model.ffn + hidden])
    else:
        hidden_in = hidden
    return {"qkv.weight": (0, qkv), "qkv.bias": (0, qkv), "proj.weight": (1, mine),
            "fc1.weight": (0, hidden_in), "fc1.bias": (0, hidden_in), "fc2.weight": (1, hidden)}


def _cut(whole: nn.Module, shard: nn.Module, indices: dict[str, tuple[int, torch.Tensor]]) -> None:
    state = whole.state_dict()
    with torch.no_grad():
        for name, value in shard.state_dict().items():
            source = state[name]
            if name in indices:
                dim, index = indices[name]
                source = source.index_select(dim, index)
            value.copy_(source)


class ParallelEmbedding(nn.Module):
    """The token rows [start, start + vocab/t) and the positions; ids outside the rows look up
    zeros, and the group's all-reduce adds the shards' lookups up."""

    def __init__(self, whole: GPTEmbedding, model: ModelSpec, tp: int, rank: int, group) -> None:
        super().__init__()
        shard = GPTEmbedding(model.vocab, model.d_model, model.seq_len, tp, dropout=0.0,
                             learned=model.position == "learned")
        _cut(whole, shard, shard_indices(model, "embedding", tp, rank))
        self.tokens, self.positions = shard.tokens, shard.positions
        self.start, self.join = rank * (model.vocab // tp), leave(group)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.start
        outside = (local < 0) | (local >= self.tokens.num_embeddings)
        looked_up = self.tokens(local.masked_fill(outside, 0)).masked_fill(outside.unsqueeze(-1), 0.0)
        joined = self.join(looked_up)
        if self.positions is None:
            return joined
        return joined + self.positions(torch.arange(ids.shape[1], device=ids.device))


class ParallelHead(nn.Module):
    """The final norm, the projection onto the vocabulary rows [start, start + vocab/t) (its input
    entered into the group: the input's gradient is the sum of the shards'), and the cross entropy
    over the shards: log Σ exp(logit − max) − (target logit − max), each sum over
    the group's shards (Megatron's vocab-parallel cross entropy)."""

    def __init__(self, whole: GPTHead, model: ModelSpec, tp: int, rank: int, group) -> None:
        super().__init__()
        shard = GPTHead(model.vocab, model.d_model, tp)
        _cut(whole, shard, shard_indices(model, "head", tp, rank))
        self.norm, self.project = shard.norm, shard.project
        self.start, self.group, self.join, self.enter = rank * (model.vocab // tp), group, leave(group), enter(group)

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.project(self.enter(self.norm(x))).float().flatten(0, 1)
        top = logits.detach().max(dim=-1).values
        _all_reduce(top, self.group, "max")
        shifted = logits - top.unsqueeze(-1)
        local = targets.flatten() - self.start
        inside = (local >= 0) & (local < logits.shape[-1])
        picked = shifted.gather(1, local.clamp(0, logits.shape[-1] - 1).unsqueeze(-1)).squeeze(-1) * inside
        return (self.join(shifted.exp().sum(dim=-1)).log() - self.join(picked)).mean()


def parallel_layer(whole: GPTLayerShard, model: ModelSpec, tp: int, rank: int, group) -> GPTLayerShard:
    shard = GPTLayerShard.of(model, tp, dropout=0.0)
    _cut(whole, shard, shard_indices(model, "layer", tp, rank))
    shard.enter, shard.leave = enter(group), leave(group)
    return shard
