"""The model and how it is trained. Sizes, FLOPs and bytes are derived here, never typed in."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from profiler.errors import InputError
from profiler.files import read_json

PRECISIONS = {"fp16": 2, "bf16": 2, "fp32": 4}  # bytes per element of weights and activations
# Optimizer state in bytes per parameter on top of the fp32 master copy: plain SGD keeps none
# (docs/facts.md §1), momentum one fp32 buffer, Adam two.
OPTIMIZER_STATE_BYTES = {"sgd": 0, "sgd_momentum": 4, "adam": 8}


ACTIVATIONS = ("gelu", "swiglu")  # the FFN: GELU(x·W1)·W2, or (SiLU(x·Wg) ⊙ x·Wu)·W2 (Shazeer 2020)
POSITIONS = ("learned", "rotary")  # a learned position table (GPT), or rotary embeddings of q and k (RoFormer)
SHAPE = ("d_model", "heads", "ffn", "seq_len", "vocab")  # what every model gives
OPTIONS = {"kv_heads": None, "activation": "gelu", "position": "learned", "tied_embedding": None}  # and their defaults
MODEL_SCHEMA = "model/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A decoder-only transformer: GPT's (learned positions, GELU, every head its own keys and
    values) by default; ``kv_heads`` < heads shares keys and values over groups of query heads
    (grouped-query attention), ``activation`` "swiglu" makes the FFN three matrices, ``position``
    "rotary" drops the position table, ``tied_embedding`` True or False says whether the output
    head is the token embedding (None: as the runtime does; Megatron ties, the study's does not).
    Biases and two-parameter norms are counted as GPT's; a model without them (Llama's RMSNorm, no
    biases) differs by a few parameters per million."""

    name: str
    layers: int
    d_model: int
    heads: int
    ffn: int
    seq_len: int
    vocab: int
    kv_heads: int | None = None
    activation: str = "gelu"
    position: str = "learned"
    tied_embedding: bool | None = None

    def __post_init__(self) -> None:
        for key in ("layers",) + SHAPE:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"model {self.name!r}: {key} must be a positive integer, got {value!r}")
        if self.d_model % self.heads:
            raise InputError(f"model {self.name!r}: d_model {self.d_model} is not divisible by heads {self.heads}")
        kv = self.kv_heads
        if kv is not None and (isinstance(kv, bool) or not isinstance(kv, int) or kv < 1 or self.heads % kv):
            raise InputError(f"model {self.name!r}: kv_heads must be a positive divisor of heads {self.heads}, "
                             f"got {kv!r}")
        for key, allowed in (("activation", ACTIVATIONS), ("position", POSITIONS)):
            if getattr(self, key) not in allowed:
                raise InputError(f"model {self.name!r}: {key} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, key)!r}")
        if self.tied_embedding is not None and not isinstance(self.tied_embedding, bool):
            raise InputError(f"model {self.name!r}: tied_embedding must be true or false, got {self.tied_embedding!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def kv_width(self) -> int:
        """Features of the keys (and of the values): kv_heads · head_dim."""
        return (self.kv_heads or self.heads) * self.head_dim

    @property
    def ffn_matrices(self) -> int:
        return 3 if self.activation == "swiglu" else 2

    def shards(self, tp: int) -> bool:
        """Whether Megatron's tensor parallelism splits this model tp ways: heads, key-value heads,
        FFN columns and vocabulary rows evenly."""
        return all(n % tp == 0 for n in (self.heads, self.kv_heads or self.heads, self.ffn, self.vocab))

    def shape(self) -> dict[str, Any]:
        """The architecture a profile is measured for: the shape, and each option not at its default."""
        return {key: getattr(self, key) for key in SHAPE} | {
            key: getattr(self, key) for key, default in OPTIONS.items()
            if key != "tied_embedding" and getattr(self, key) != default}

    @property
    def params_per_layer(self) -> int:
        return int(self.layer_params_per_shard(1))

    def layer_params_per_shard(self, tp: int) -> float:
        """Parameters one of tp tensor-parallel ranks holds of a layer: Megatron splits the weight
        matrices and the column-parallel biases (QKV, FFN in); layer norms and the row-parallel
        biases (attention out, FFN out) stay whole on every rank."""
        h, f, kv = self.d_model, self.ffn, self.kv_width
        ffn_in = (self.ffn_matrices - 1) * f  # FFN input columns: W1, or the gate's and the up projection's
        split = h * (h + 2 * kv) + (h + 2 * kv) + h * h + h * ffn_in + ffn_in + f * h
        return split / tp + 6 * h  # 2 layer norms (4h), attention-out and FFN-out biases (2h)

    def embedding_params_per_shard(self, tp: int) -> float:
        positions = self.seq_len * self.d_model if self.position == "learned" else 0
        return self.vocab * self.d_model / tp + positions  # a position table stays whole

    def head_params_per_shard(self, tp: int) -> float:
        return self.vocab * self.d_model / tp + 2 * self.d_model  # final layer norm stays whole

    @property
    def embedding_params(self) -> int:
        return int(self.embedding_params_per_shard(1))  # token (+ learned position) embeddings

    @property
    def head_params(self) -> int:
        return self.vocab * self.d_model + 2 * self.d_model  # output projection + final layer norm

    @property
    def total_params(self) -> int:
        """Every parameter once: a tied head shares the token embedding's matrix."""
        head = 2 * self.d_model if self.tied_embedding else self.head_params
        return self.layers * self.params_per_layer + self.embedding_params + head

    def layer_forward_flops(self, micro_batch: int) -> float:
        """Matrix-multiply FLOPs of one layer's forward pass (docs/facts.md §1: b·s·(24h² + 4sh)
        for GPT at f = 4h): its projections, 2 FLOPs a weight a token, and the attention's two
        batched products, 4·b·s²·h."""
        b, s, h, f = micro_batch, self.seq_len, self.d_model, self.ffn
        weights = h * (h + 2 * self.kv_width) + h * h + self.ffn_matrices * h * f
        return 2.0 * b * s * weights + 4.0 * b * s * s * h

    def iteration_flops(self, global_batch: int) -> float:
        """One iteration's FLOPs as docs/facts.md §1 counts them: the layers' forward, backward (2×) and
        recompute (1×), 4× the forward per sequence (23.64 PFLOP for 24 layers, batch 1024)."""
        return 4.0 * self.layer_forward_flops(1) * self.layers * global_batch

    def head_forward_flops(self, micro_batch: int) -> float:
        return 2.0 * micro_batch * self.seq_len * self.d_model * self.vocab

    def activation_bytes(self, micro_batch: int, precision: str) -> int:
        """One micro-batch's activation crossing a stage boundary (docs/facts.md §1: 8 MiB for GPT3-XL)."""
        return micro_batch * self.seq_len * self.d_model * PRECISIONS[precision]

    def layer_activation_bytes(self, micro_batch: int, element_bytes: int, tp: int = 1) -> float:
        """All activations one layer keeps for its backward, one micro-batch (Korthikanti et al.
        2022, "Reducing Activation Recomputation in Large Transformer Models", eq. 2, 16-bit,
        tensor-parallel without sequence parallelism): s·b·h·(10 + 24/t + 5·a·s/(h·t)) bytes for
        GPT. Its 24/t are the split tensors: q, k, v and the attention output (2 bytes each per
        feature, keys and values ``kv_width`` wide) and the FFN's (GELU: its input and output,
        4f; SwiGLU: gate, up and their product, 6f), written here for any model; other element
        sizes scale it."""
        ffn = (4 if self.activation == "gelu" else 6) * self.ffn
        split = 2 * self.d_model + 4 * self.kv_width + 2 * self.d_model + ffn
        return (element_bytes / 2 * self.seq_len * micro_batch
                * (10 * self.d_model + split / tp + 5 * self.heads * self.seq_len / tp))

    def with_layers(self, layers: int) -> "ModelSpec":
        """The same architecture with ``layers`` layers (a preset's name says the count)."""
        base = self.name.rsplit("-", 1)[0] if self.name.endswith(f"-{self.layers}l") else self.name
        return replace(self, name=f"{base}-{layers}l", layers=layers)

    def to_json(self) -> dict[str, Any]:
        """Only the options not at their defaults, so a GPT's document (and a plan's fingerprint)
        reads as it always has."""
        doc = {"name": self.name, "layers": self.layers} | {key: getattr(self, key) for key in SHAPE}
        return doc | {key: getattr(self, key) for key, default in OPTIONS.items() if getattr(self, key) != default}

    @classmethod
    def from_json(cls, doc: Any, where: str = "model") -> "ModelSpec":
        if not isinstance(doc, dict):
            raise InputError(f"{where}: a model must be an object, got {type(doc).__name__}")
        missing = [key for key in ("name", "layers") + SHAPE if key not in doc]
        if missing:
            raise InputError(f"{where}: the model lacks {', '.join(missing)}")
        unknown = sorted(set(doc) - {"schema", "name", "layers", *SHAPE, *OPTIONS})
        if unknown:
            raise InputError(f"{where}: unknown model field {', '.join(map(repr, unknown))} (a model gives "
                             f"{', '.join(('name', 'layers') + SHAPE)} and optionally {', '.join(OPTIONS)})")
        try:
            return cls(**{key: doc[key] for key in doc if key != "schema"})
        except InputError as err:
            raise InputError(f"{where}: {err}") from None


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


def _gpt3(name: str, layers: int, d_model: int, heads: int) -> ModelSpec:
    """A GPT-3 size (Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1):
    2,048 tokens, FFN 4·d, learned positions, the head tied to the token embedding (as GPT-2);
    GPT-2's 50,257-token BPE padded to 50,304, a multiple of 128, as Megatron-LM pads it."""
    return ModelSpec(name=name, layers=layers, d_model=d_model, heads=heads, ffn=4 * d_model, seq_len=2048,
                     vocab=50304, tied_embedding=True)


def _llama2(name: str, layers: int, d_model: int, heads: int, kv_heads: int, ffn: int) -> ModelSpec:
    """A Llama 2 size (Touvron et al. 2023, "Llama 2: Open Foundation and Fine-Tuned Chat Models",
    Table 1, and its released config.json: intermediate_size, num_key_value_heads): 4,096 tokens,
    SwiGLU FFN, rotary positions, a 32,000-token vocabulary, the head not tied."""
    return ModelSpec(name=name, layers=layers, d_model=d_model, heads=heads, ffn=ffn, seq_len=4096, vocab=32000,
                     kv_heads=None if kv_heads == heads else kv_heads, activation="swiglu", position="rotary",
                     tied_embedding=False)


# Named models, each at its own layer count (`--layers` changes it). Table 2.1's 1.3B lists 24
# heads of 128, which do not make its d_model 2048: 16 of 128 do (the study's GPT3-XL too); its
# 13B lists d_model 5140 for 40 heads of 128, which make 5120.
PRESETS: dict[str, ModelSpec] = {
    "gpt3-xl": gpt3_xl(),
    "gpt-small": gpt_small(),
    "gpt3-350m": _gpt3("gpt3-350m", 24, 1024, 16),
    "gpt3-1.3b": _gpt3("gpt3-1.3b", 24, 2048, 16),
    "gpt3-2.7b": _gpt3("gpt3-2.7b", 32, 2560, 32),
    "gpt3-6.7b": _gpt3("gpt3-6.7b", 32, 4096, 32),
    "gpt3-13b": _gpt3("gpt3-13b", 40, 5120, 40),
    "llama2-7b": _llama2("llama2-7b", 32, 4096, 32, 32, 11008),
    "llama2-13b": _llama2("llama2-13b", 40, 5120, 40, 40, 13824),
    "llama2-70b": _llama2("llama2-70b", 80, 8192, 64, 8, 28672),
}


def load_model(path: str | Path) -> ModelSpec:
    """A model file (``model/1``): name, layers and shape, optionally the options of ModelSpec."""
    doc = read_json(path, "model")
    if isinstance(doc, dict) and doc.get("schema", MODEL_SCHEMA) != MODEL_SCHEMA:
        raise InputError(f"{path}: expected a model ({MODEL_SCHEMA}), got schema {doc.get('schema')!r}")
    return ModelSpec.from_json(doc, str(path))


def model_named(text: str, layers: int | None = None) -> ModelSpec:
    """``--model NAME|FILE``: a preset's name or a model file, at ``layers`` if given."""
    if text in PRESETS:
        model = PRESETS[text]
    elif text.endswith(".json") or Path(text).exists():
        model = load_model(text)
    else:
        raise InputError(f"--model {text!r}: neither a model ({', '.join(PRESETS)}) nor a model file (model/1)")
    return model if layers is None or layers == model.layers else model.with_layers(layers)
