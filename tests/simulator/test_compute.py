"""The compute model against docs/facts.md §2's measured V100 layer, and its shape across GPUs and shards."""

from __future__ import annotations

import pytest

from profiler.gpus import gpu_kind
from profiler.model import TrainingSpec, gpt3_xl
from scheduler.runtimes import MEGATRON_LAYER, STUDY_LAYER
from simulator.cost.compute import (
    GEMM_EFFICIENCY,
    OFFLOAD_HOST_OP_BYTES_PER_PARAM,
    PCIE3_X16_BYTES_PER_S,
    Gemm,
    adaptive_clusters,
    adaptive_head_times,
    device_compute,
    embedding_times,
    head_times,
    layer_efficiency,
    layer_times,
    offloaded_step_s,
)

V100 = gpu_kind("V100-SXM2-16GB")
MODEL = gpt3_xl()
STUDY = TrainingSpec(global_batch=1024)


def test_sourced_efficiencies_are_what_the_per_layer_facts_solve_to() -> None:
    """docs/facts.md §2 read per layer: 5.3 ms forward, 9.3 ms backward, recompute one more forward."""
    assert GEMM_EFFICIENCY == pytest.approx(layer_efficiency(), rel=1e-4)
    times = layer_times(V100, MODEL, STUDY, 1)
    assert times.forward_s == pytest.approx(5.3e-3, rel=1e-3)
    assert times.backward_s == pytest.approx(9.3e-3, rel=1e-3)
    assert times.recompute_s == times.forward_s
    assert all(0 < e <= 1 for e in GEMM_EFFICIENCY)


def test_the_study_layer_costs_more_than_megatrons_fused_one() -> None:
    """Separate q, k, v GEMMs (wave quantisation), unfused scale and softmax, bias and head copies."""
    fused = layer_times(V100, MODEL, STUDY, 1, kernels=MEGATRON_LAYER)
    plain = layer_times(V100, MODEL, STUDY, 1, kernels=STUDY_LAYER)
    assert fused.forward_s < plain.forward_s < 1.2 * fused.forward_s
    assert plain.backward_s > 0.9 * fused.backward_s  # its fp16 gradient sums move less than main_grad's


def test_adaptive_head_is_torchs_and_far_cheaper_than_the_full_projection() -> None:
    head, tails = adaptive_clusters(MODEL, (1000, 2000, 5000), 4)
    assert head == 1003 and tails == [(512, 1000), (128, 3000), (32, MODEL.vocab - 5000)]
    forward, backward = adaptive_head_times(V100, MODEL, STUDY, (1000, 2000, 5000), 4)
    full = head_times(V100, MODEL, STUDY, 1)
    assert 0 < forward < full[0] / 3 and 0 < backward < full[1] / 2
    assert backward > forward  # its backward includes the checkpoint's recompute


def test_offloaded_step_moves_pcie_and_host_bytes() -> None:
    step = offloaded_step_s(1e8)
    assert step == pytest.approx(2 * offloaded_step_s(5e7))
    assert step > 1e8 * (6 / PCIE3_X16_BYTES_PER_S + OFFLOAD_HOST_OP_BYTES_PER_PARAM / 40e9)
    assert 12e9 < PCIE3_X16_BYTES_PER_S < 15.75e9


def test_no_recompute_without_checkpointing() -> None:
    times = layer_times(V100, MODEL, TrainingSpec(global_batch=8, activation_recompute=False), 1)
    assert times.recompute_s == 0.0
    assert times.forward_s == layer_times(V100, MODEL, STUDY, 1).forward_s


def test_layer_is_slower_than_the_v100_peak() -> None:
    times = layer_times(V100, MODEL, STUDY, 1)
    assert times.forward_s > MODEL.layer_forward_flops(1) / V100.peak_flops_per_s("fp16")
    assert times.backward_s > 2 * MODEL.layer_forward_flops(1) / V100.peak_flops_per_s("fp16")


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_tensor_parallel_shard_costs_more_than_its_share(tp: int) -> None:
    full = layer_times(V100, MODEL, STUDY, 1)
    shard = layer_times(V100, MODEL, STUDY, tp)
    assert full.forward_s / tp < shard.forward_s < full.forward_s
    assert full.backward_s / tp < shard.backward_s < full.backward_s


def test_tensor_parallel_efficiency_falls_with_degree() -> None:
    """t · shard time / full time: the shards' summed time grows as they get smaller."""
    full = layer_times(V100, MODEL, STUDY, 1).forward_s
    overheads = [tp * layer_times(V100, MODEL, STUDY, tp).forward_s / full for tp in (1, 2, 4, 8)]
    assert overheads[0] == pytest.approx(1.0)
    assert overheads == sorted(overheads)
    assert overheads[-1] > overheads[1]


@pytest.mark.parametrize("gpu", ["A100-40GB", "A100-80GB", "H100-80GB"])
def test_faster_gpus_are_faster(gpu: str) -> None:
    v100 = layer_times(V100, MODEL, STUDY, 1)
    other = layer_times(gpu_kind(gpu), MODEL, STUDY, 1)
    assert other.forward_s < v100.forward_s
    assert other.backward_s < v100.backward_s


def test_h100_faster_than_a100() -> None:
    a100 = layer_times(gpu_kind("A100-40GB"), MODEL, STUDY, 1)
    h100 = layer_times(gpu_kind("H100-80GB"), MODEL, STUDY, 1)
    assert h100.forward_s < a100.forward_s and h100.backward_s < a100.backward_s


@pytest.mark.parametrize("micro_batch", [2, 4, 8])
def test_bigger_micro_batch_costs_at_most_proportionally_more(micro_batch: int) -> None:
    one = layer_times(V100, MODEL, STUDY, 1)
    many = layer_times(V100, MODEL, TrainingSpec(global_batch=64, micro_batch=micro_batch), 1)
    assert one.forward_s < many.forward_s <= micro_batch * one.forward_s
    assert one.backward_s < many.backward_s <= micro_batch * one.backward_s


def test_fp32_is_slower_than_fp16() -> None:
    fp32 = layer_times(V100, MODEL, TrainingSpec(global_batch=8, precision="fp32"), 1)
    assert fp32.forward_s > 5.3e-3


def test_head_embedding_and_optimizer_are_positive_and_shrink_with_tp() -> None:
    for f in (head_times, embedding_times):
        full, shard = f(V100, MODEL, STUDY, 1), f(V100, MODEL, STUDY, 4)
        assert all(t > 0 for t in full)
        assert shard[1] < full[1]
    params = 24 * MODEL.params_per_layer / 8
    step = device_compute(V100.name, MODEL, STUDY, 1).optimizer_s
    assert step(2 * params) > step(params) > 0


def test_gemm_quantisation() -> None:
    # one 128×128 tile on an 80-SM GPU: one SM of 80 busy
    assert Gemm(128, 128, 64).quantised_fraction(80) == pytest.approx(1 / 80)
    # 80 tiles fill exactly one wave
    assert Gemm(128 * 8, 128 * 10, 64).quantised_fraction(80) == pytest.approx(1.0)
    # 81 tiles need two waves
    assert Gemm(128 * 81, 128, 64).quantised_fraction(80) == pytest.approx(81 / 160)
    assert Gemm(2, 3, 4, batch=5).flops == 2 * 2 * 3 * 4 * 5
