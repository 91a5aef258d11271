"""The GPT model's parts, as Megatron-LM shards them: one definition for the profiler's timings
and the executor's stages (torch lives here, in the profiler's measuring part).

A tensor-parallel degree t gives the 1/t shard of a layer: QKV and the FFN input split by columns,
the attention output and FFN output by rows, heads split t ways. The all-reduces that join the
shards are not part of the module (the simulator models them as communication): the executor
plugs them in as ``enter`` (identity forward, all-reduce of the gradient backward) and ``leave``
(all-reduce forward); the row-split projections add their bias after ``leave``, once. Attention is the
explicit scaled softmax with dropout that Megatron ran in 2021, not a fused flash kernel.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GPTLayerShard(nn.Module):
    def __init__(self, d_model: int, heads: int, ffn: int, tp: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if heads % tp or ffn % tp or d_model % heads:
            raise ValueError(f"d_model {d_model}, heads {heads}, ffn {ffn} do not shard {tp} ways")
        self.heads = heads // tp
        self.head_dim = d_model // heads
        width = self.heads * self.head_dim
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * width)
        self.proj = nn.Linear(width, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn // tp)
        self.fc2 = nn.Linear(ffn // tp, d_model)
        self.dropout = nn.Dropout(dropout)
        self.enter = self.leave = _identity  # the tensor-parallel group's joins (executor.tensor_parallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, seq, d_model) -> same shape."""
        b, s, _ = x.shape
        q, k, v = self.qkv(self.enter(self.norm1(x))).view(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        weights = self.dropout(torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1))
        attended = torch.matmul(weights, v).transpose(1, 2).reshape(b, s, self.heads * self.head_dim)
        x = x + self.dropout(self.leave(nn.functional.linear(attended, self.proj.weight)) + self.proj.bias)
        hidden = nn.functional.gelu(self.fc1(self.enter(self.norm2(x))))
        return x + self.dropout(self.leave(nn.functional.linear(hidden, self.fc2.weight)) + self.fc2.bias)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class GPTEmbedding(nn.Module):
    """Token embedding (vocab-parallel: the 1/t of the rows a rank holds) plus learned positions."""

    def __init__(self, vocab: int, d_model: int, seq_len: int, tp: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if vocab % tp:
            raise ValueError(f"vocabulary {vocab} does not shard {tp} ways")
        self.tokens = nn.Embedding(vocab // tp, d_model)
        self.positions = nn.Embedding(seq_len, d_model)
        for table in (self.tokens, self.positions):  # GPT-2's and Megatron-LM's init, std 0.02 (torch's is 1,
            nn.init.normal_(table.weight, std=0.02)  # which a head tied to the tokens would turn into huge logits)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (batch, seq) token ids below vocab / tp -> (batch, seq, d_model)."""
        where = torch.arange(ids.shape[1], device=ids.device)
        return self.dropout(self.tokens(ids) + self.positions(where))


class GPTHead(nn.Module):
    """Final layer norm, the output projection onto the rank's 1/t of the vocabulary, and the
    cross entropy in fp32 over those logits (Megatron's vocab-parallel loss, without its
    all-reduces)."""

    def __init__(self, vocab: int, d_model: int, tp: int = 1) -> None:
        super().__init__()
        if vocab % tp:
            raise ValueError(f"vocabulary {vocab} does not shard {tp} ways")
        self.norm = nn.LayerNorm(d_model)
        self.project = nn.Linear(d_model, vocab // tp, bias=False)

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """x: (batch, seq, d_model), targets: (batch, seq) ids below vocab / tp -> the mean loss."""
        logits = self.project(self.norm(x)).float()
        return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
