"""GPT3-XL sizes, FLOPs and bytes against docs/facts.md §1; TrainingSpec's input checks."""

from __future__ import annotations

import pytest

from profiler.errors import InputError
from profiler.model import ModelSpec, TrainingSpec, gpt3_xl

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
