"""The model and how it is trained. Sizes, FLOPs and bytes are derived here, never typed in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from profiler.errors import InputError

PRECISIONS = {"fp16": 2, "bf16": 2, "fp32": 4}  # bytes per element of weights and activations
# Optimizer state in bytes per parameter on top of the fp32 master copy: plain SGD keeps none
# (docs/facts.md §1), momentum one fp32 buffer, Adam two.
OPTIMIZER_STATE_BYTES = {"sgd": 0, "sgd_momentum": 4, "adam": 8}


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A decoder-only GPT with learned position embeddings."""

    name: str
    layers: int
    d_model: int
    heads: int
    ffn: int
    seq_len: int
    vocab: int

    def __post_init__(self) -> None:
        for key in ("layers", "d_model", "heads", "ffn", "seq_len", "vocab"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"model {self.name!r}: {key} must be a positive integer, got {value!r}")
        if self.d_model % self.heads:
            raise InputError(f"model {self.name!r}: d_model {self.d_model} is not divisible by heads {self.heads}")

    @property
    def params_per_layer(self) -> int:
        h, f = self.d_model, self.ffn
        # QKV (3h² + 3h), attention out (h² + h), FFN in (hf + f), FFN out (fh + h), 2 layer norms (4h)
        return 4 * h * h + 2 * h * f + 9 * h + f

    def layer_params_per_shard(self, tp: int) -> float:
        """Parameters one of tp tensor-parallel ranks holds of a layer: Megatron splits the weight
        matrices and the column-parallel biases (QKV, FFN in); layer norms and the row-parallel
        biases (attention out, FFN out) stay whole on every rank."""
        h, f = self.d_model, self.ffn
        return (4 * h * h + 2 * h * f + 3 * h + f) / tp + 6 * h

    def embedding_params_per_shard(self, tp: int) -> float:
        return self.vocab * self.d_model / tp + self.seq_len * self.d_model  # position table stays whole

    def head_params_per_shard(self, tp: int) -> float:
        return self.vocab * self.d_model / tp + 2 * self.d_model  # final layer norm stays whole

    @property
    def embedding_params(self) -> int:
        return (self.vocab + self.seq_len) * self.d_model  # token + learned position embeddings

    @property
    def head_params(self) -> int:
        return self.vocab * self.d_model + 2 * self.d_model  # output projection + final layer norm

    @property
    def total_params(self) -> int:
        return self.layers * self.params_per_layer + self.embedding_params + self.head_params

    def layer_forward_flops(self, micro_batch: int) -> float:
        """Matrix-multiply FLOPs of one layer's forward pass (docs/facts.md §1: b·s·(24h² + 4sh) at f = 4h)."""
        b, s, h, f = micro_batch, self.seq_len, self.d_model, self.ffn
        return 2.0 * b * s * (4 * h * h + 2 * h * f) + 4.0 * b * s * s * h

    def iteration_flops(self, global_batch: int) -> float:
        """One iteration's FLOPs as docs/facts.md §1 counts them: the layers' forward, backward (2×) and
        recompute (1×), 4× the forward per sequence (23.64 PFLOP for 24 layers, batch 1024)."""
        return 4.0 * self.layer_forward_flops(1) * self.layers * global_batch

    def head_forward_flops(self, micro_batch: int) -> float:
        return 2.0 * micro_batch * self.seq_len * self.d_model * self.vocab

    def activation_bytes(self, micro_batch: int, precision: str) -> int:
        """One micro-batch's activation crossing a stage boundary (docs/facts.md §1: 8 MiB for GPT3-XL)."""
        return micro_batch * self.seq_len * self.d_model * PRECISIONS[precision]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "layers": self.layers, "d_model": self.d_model, "heads": self.heads,
                "ffn": self.ffn, "seq_len": self.seq_len, "vocab": self.vocab}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "ModelSpec":
        return cls(**{key: doc[key] for key in ("name", "layers", "d_model", "heads", "ffn", "seq_len", "vocab")})


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingSpec:
    global_batch: int
    micro_batch: int = 1
    precision: str = "fp16"
    activation_recompute: bool = True
    optimizer: str = "sgd"
    # The study's runtime: gradient-accumulation rounds a pipeline runs its micro-batches in
    # (None: as its runtime does, rounds of at most 64), and whether the fp32 master weights and
    # the optimizer step live in host memory (None: the runtime's default: the study's offloads).
    rounds: int | None = None
    offload: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.global_batch, int) or self.global_batch < 1:
            raise InputError(f"global batch must be a positive integer, got {self.global_batch!r}")
        if not isinstance(self.micro_batch, int) or self.micro_batch < 1:
            raise InputError(f"micro-batch must be a positive integer, got {self.micro_batch!r}")
        if self.global_batch % self.micro_batch:
            raise InputError(f"global batch {self.global_batch} is not divisible by micro-batch {self.micro_batch}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.optimizer not in OPTIMIZER_STATE_BYTES:
            raise InputError(f"optimizer must be one of {', '.join(OPTIMIZER_STATE_BYTES)}, got {self.optimizer!r}")
        if self.rounds is not None and (isinstance(self.rounds, bool) or not isinstance(self.rounds, int)
                                        or self.rounds < 1):
            raise InputError(f"rounds must be a positive integer, got {self.rounds!r}")
        if self.offload is not None and not isinstance(self.offload, bool):
            raise InputError(f"offload must be true or false, got {self.offload!r}")

    @property
    def element_bytes(self) -> int:
        return PRECISIONS[self.precision]

    def to_json(self) -> dict[str, Any]:
        doc = {"global_batch": self.global_batch, "micro_batch": self.micro_batch, "precision": self.precision,
               "activation_recompute": self.activation_recompute, "optimizer": self.optimizer}
        return doc | {key: getattr(self, key) for key in ("rounds", "offload") if getattr(self, key) is not None}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "TrainingSpec":
        return cls(**doc)


def gpt3_xl(layers: int = 24) -> ModelSpec:
    """GPT3-XL as the study trained it (docs/facts.md §1). Vocabulary: BERT's cased WordPiece (28,996)
    padded to a multiple of 128 = 29,056 (docs/facts.md §1 gives ≈ 29k)."""
    return ModelSpec(name=f"gpt3-xl-{layers}l", layers=layers, d_model=2048, heads=16, ffn=8192,
                     seq_len=2048, vocab=29056)


def gpt_small(layers: int = 4) -> ModelSpec:
    """A small GPT that a CPU runs in seconds: the profiler's default on a CPU and the size the
    executor's local validation runs (d_model 512, 8 heads, 4·d FFN, 256 tokens, an 8,192 vocabulary)."""
    return ModelSpec(name=f"gpt-small-{layers}l", layers=layers, d_model=512, heads=8, ffn=2048, seq_len=256,
                     vocab=8192)


MODELS = {"gpt3-xl": gpt3_xl, "gpt-small": gpt_small}
