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
    """One layer's 1/tp shard. Defaults are GPT's; ``kv_heads`` < heads shares each key and value
    head over heads / kv_heads query heads, ``activation`` "swiglu" makes the FFN
    (SiLU(x·Wg) ⊙ x·Wu)·W2 (``fc1`` holds Wg over Wu), ``rotary`` rotates q and k by their positions
    (RoFormer, Su et al. 2021) in place of a learned position table."""

    def __init__(self, d_model: int, heads: int, ffn: int, tp: int = 1, dropout: float = 0.1,
                 kv_heads: int | None = None, activation: str = "gelu", rotary: bool = False) -> None:
        super().__init__()
        kv_heads = kv_heads or heads
        if heads % tp or kv_heads % tp or ffn % tp or d_model % heads or heads % kv_heads:
            raise ValueError(f"d_model {d_model}, heads {heads}, kv_heads {kv_heads}, ffn {ffn} do not shard {tp} ways")
        self.heads, self.kv_heads = heads // tp, kv_heads // tp
        self.head_dim = d_model // heads
        self.swiglu, self.rotary = activation == "swiglu", rotary
        width, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, width + 2 * kv)
        self.proj = nn.Linear(width, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, (2 if self.swiglu else 1) * (ffn // tp))
        self.fc2 = nn.Linear(ffn // tp, d_model)
        self.dropout = nn.Dropout(dropout)
        self.enter = self.leave = _identity  # the tensor-parallel group's joins (executor.tensor_parallel)

    @classmethod
    def of(cls, model, tp: int = 1, dropout: float = 0.1) -> "GPTLayerShard":
        """The shard of a profiler.model.ModelSpec's layer."""
        return cls(model.d_model, model.heads, model.ffn, tp, dropout, model.kv_heads, model.activation,
                   model.position == "rotary")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, seq, d_model) -> same shape."""
        b, s, _ = x.shape
        width, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        q, k, v = self.qkv(self.enter(self.norm1(x))).split([width, kv, kv], dim=-1)
        q = q.view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k, v = (t.view(b, s, self.kv_heads, self.head_dim).transpose(1, 2) for t in (k, v))
        if self.rotary:
            q, k = _rotate(q), _rotate(k)
        if self.kv_heads != self.heads:  # each key and value head serves a group of query heads
            k, v = (t.repeat_interleave(self.heads // self.kv_heads, dim=1) for t in (k, v))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        weights = self.dropout(torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1))
        attended = torch.matmul(weights, v).transpose(1, 2).reshape(b, s, width)
        x = x + self.dropout(self.leave(nn.functional.linear(attended, self.proj.weight)) + self.proj.bias)
        inner = self.fc1(self.enter(self.norm2(x)))
        if self.swiglu:
            gate, up = inner.chunk(2, dim=-1)
            hidden = nn.functional.silu(gate) * up
        else:
            hidden = nn.functional.gelu(inner)
        return x + self.dropout(self.leave(nn.functional.linear(hidden, self.fc2.weight)) + self.fc2.bias)


def _rotate(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding of (batch, heads, seq, head_dim): feature pairs (i, i + d/2)
    turned by position · base^(−2i/d), as GPT-NeoX and Llama pair them."""
    s, d = x.shape[-2], x.shape[-1]
    inverse = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = torch.outer(torch.arange(s, device=x.device, dtype=torch.float32), inverse)
    cos, sin = (torch.cat([f(angles)] * 2, dim=-1).to(x.dtype) for f in (torch.cos, torch.sin))
    first, second = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-second, first], dim=-1) * sin


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class GPTEmbedding(nn.Module):
    """Token embedding (vocab-parallel: the 1/t of the rows a rank holds) plus learned positions,
    or none where the layers rotate q and k (``learned`` False)."""

    def __init__(self, vocab: int, d_model: int, seq_len: int, tp: int = 1, dropout: float = 0.1,
                 learned: bool = True) -> None:
        super().__init__()
        if vocab % tp:
            raise ValueError(f"vocabulary {vocab} does not shard {tp} ways")
        self.tokens = nn.Embedding(vocab // tp, d_model)
        self.positions = nn.Embedding(seq_len, d_model) if learned else None
        # GPT-2's and Megatron-LM's init, std 0.02 (torch's is 1, which a head tied to the tokens
        # would turn into huge logits)
        for table in filter(None, (self.tokens, self.positions)):
            nn.init.normal_(table.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (batch, seq) token ids below vocab / tp -> (batch, seq, d_model)."""
        if self.positions is None:
            return self.dropout(self.tokens(ids))
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
