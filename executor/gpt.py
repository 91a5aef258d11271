"""The GPT layer, as Megatron-LM shards it: one definition for the profiler's timings and, later,
the executor's stages.

A tensor-parallel degree t gives the 1/t shard of a layer: QKV and the FFN input split by columns,
the attention output and FFN output by rows, heads split t ways. The all-reduces that join the
shards are not part of the module (the simulator models them as communication). Attention is the
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, seq, d_model) -> same shape."""
        b, s, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        weights = self.dropout(torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1))
        attended = torch.matmul(weights, v).transpose(1, 2).reshape(b, s, self.heads * self.head_dim)
        x = x + self.dropout(self.proj(attended))
        return x + self.dropout(self.fc2(nn.functional.gelu(self.fc1(self.norm2(x)))))
