"""GPT3-XL sizes, FLOPs and bytes against docs/facts.md §1; the named models against their papers;
model files; TrainingSpec's input checks."""

from __future__ import annotations

import json

import pytest

from profiler.errors import InputError
from profiler.model import PRESETS, ModelSpec, TrainingSpec, gpt3_xl, load_model, model_named

H = S = 2048


def test_params_per_layer() -> None:
    model = gpt3_xl()
    assert model.params_per_layer == pytest.approx(50.3e6, rel=2e-3)
    # 12h² weights + 13h biases and layer-norm parameters (FFN 4h)
    assert model.params_per_layer == 12 * H * H + 13 * H


@pytest.mark.parametrize("layers", [24, 32, 40])
def test_total_params_grow_by_one_layer_each(layers: int) -> None:
    assert gpt3_xl(layers).total_params - gpt3_xl(layers - 1).total_params == gpt3_xl().params_per_layer


def test_total_params_24_layers() -> None:
    assert gpt3_xl(24).total_params == pytest.approx(1.3e9, rel=0.03)
    assert gpt3_xl(24).layers == 24


def test_forward_flops_per_layer_per_sequence_exact() -> None:
    assert gpt3_xl().layer_forward_flops(1) == 2048 * (24 * 2048**2 + 4 * 2048 * 2048)
    assert gpt3_xl().layer_forward_flops(1) == pytest.approx(240.5e9, rel=1e-3)


def test_forward_flops_scale_with_micro_batch() -> None:
    model = gpt3_xl()
    assert model.layer_forward_flops(4) == 4 * model.layer_forward_flops(1)


def test_whole_iteration_flops() -> None:
    """docs/facts.md §1: 4× forward per layer per sequence, 24 layers, batch 1024 = 23.64 PFLOP."""
    total = 4 * gpt3_xl(24).layer_forward_flops(1) * 24 * 1024
    assert total == pytest.approx(23.64e15, rel=1e-3)
    assert gpt3_xl(24).iteration_flops(1024) == total
    assert gpt3_xl(40).iteration_flops(2048) == pytest.approx(total * 40 / 24 * 2)


def test_activation_bytes() -> None:
    model = gpt3_xl()
    assert model.activation_bytes(1, "fp16") == 8 * 2**20
    assert model.activation_bytes(1, "bf16") == 8 * 2**20
    assert model.activation_bytes(2, "fp32") == 32 * 2**20


def test_head_flops() -> None:
    model = gpt3_xl()
    assert model.head_forward_flops(1) == 2 * S * H * model.vocab
    assert model.vocab % 128 == 0 and abs(model.vocab - 29_000) < 500


def test_model_json_round_trip() -> None:
    model = gpt3_xl(32)
    assert ModelSpec.from_json(model.to_json()) == model


@pytest.mark.parametrize("bad", [dict(layers=0), dict(heads=3), dict(d_model=-1), dict(vocab=1.5)])
def test_model_rejects_bad_shapes(bad: dict) -> None:
    kwargs = gpt3_xl().to_json() | bad
    with pytest.raises(InputError):
        ModelSpec(**kwargs)


def test_training_defaults_are_the_study() -> None:
    spec = TrainingSpec(global_batch=1024)
    assert (spec.micro_batch, spec.precision, spec.activation_recompute, spec.optimizer) == (1, "fp16", True, "sgd")
    assert spec.element_bytes == 2
    assert TrainingSpec.from_json(spec.to_json()) == spec


def test_batch_not_divisible_by_micro_batch() -> None:
    with pytest.raises(InputError, match="1025.*4"):
        TrainingSpec(global_batch=1025, micro_batch=4)
    TrainingSpec(global_batch=1024, micro_batch=4)


@pytest.mark.parametrize("bad", [dict(global_batch=0), dict(global_batch=8, micro_batch=0),
                                 dict(global_batch=8.0), dict(global_batch=8, micro_batch=-2)])
def test_non_positive_batch(bad: dict) -> None:
    with pytest.raises(InputError):
        TrainingSpec(**bad)


def test_unknown_precision() -> None:
    with pytest.raises(InputError, match="fp8"):
        TrainingSpec(global_batch=8, precision="fp8")


def test_unknown_optimizer() -> None:
    with pytest.raises(InputError, match="lamb"):
        TrainingSpec(global_batch=8, optimizer="lamb")


# -- models as data -------------------------------------------------------------------------
# Published sizes: GPT-3's Table 2.1 (Brown et al. 2020), Llama 2's (Touvron et al. 2023).
@pytest.mark.parametrize("name,published", [("gpt3-350m", 350e6), ("gpt3-1.3b", 1.3e9), ("gpt3-2.7b", 2.7e9),
                                            ("gpt3-6.7b", 6.7e9), ("gpt3-13b", 13.0e9), ("llama2-7b", 6.74e9),
                                            ("llama2-13b", 13.0e9), ("llama2-70b", 69.0e9)])
def test_the_presets_have_their_published_sizes(name: str, published: float) -> None:
    assert PRESETS[name].total_params == pytest.approx(published, rel=0.025)


def test_grouped_query_attention_and_swiglu_count_their_matrices() -> None:
    h, f = 8192, 28672
    model = PRESETS["llama2-70b"]  # 64 heads of 128, 8 key-value heads: keys and values 1024 wide
    assert model.kv_width == 1024 and model.ffn_matrices == 3
    weights = h * (h + 2 * 1024) + h * h + 3 * h * f
    assert model.params_per_layer == weights + (h + 2 * 1024) + 2 * f + 6 * h  # biases, norms
    assert model.layer_forward_flops(1) == 2.0 * 4096 * weights + 4.0 * 4096 * 4096 * h
    assert model.embedding_params == 32000 * h  # rotary: no position table


def test_a_gpt_document_reads_as_before_and_a_model_file_round_trips(tmp_path) -> None:
    assert set(gpt3_xl().to_json()) == {"name", "layers", "d_model", "heads", "ffn", "seq_len", "vocab"}
    llama = PRESETS["llama2-70b"]
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"schema": "model/1"} | llama.to_json()))
    assert load_model(path) == llama and model_named(str(path)) == llama
    assert model_named("llama2-7b", 8).layers == 8 and model_named("gpt3-xl", 32) == gpt3_xl(32)


@pytest.mark.parametrize("change,words", [
    (dict(kv_heads=3), "kv_heads must be a positive divisor of heads 4"),
    (dict(activation="relu"), "activation must be one of gelu, swiglu"),
    (dict(position="alibi"), "position must be one of learned, rotary"),
    (dict(tied_embedding="yes"), "tied_embedding must be true or false"),
    (dict(layers=True), "layers must be a positive integer"),
    (dict(depth=3), "unknown model field 'depth'"),
])
def test_a_bad_model_file_is_one_line_naming_the_field(tmp_path, change, words) -> None:
    doc = {"schema": "model/1", "name": "m", "layers": 2, "d_model": 64, "heads": 4, "ffn": 256, "seq_len": 32,
           "vocab": 512} | change
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=words):
        load_model(path)


def test_an_unknown_model_name_lists_the_presets() -> None:
    with pytest.raises(InputError, match="neither a model .*llama2-7b.* nor a model file"):
        model_named("gpt5")
