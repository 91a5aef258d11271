"""The memory model: a plan that cannot fit is rejected; what each schedule keeps in flight."""

from __future__ import annotations

import pytest

from profiler.model import TrainingSpec, gpt3_xl
from profiler.scenarios import SCENARIOS
from scheduler.layouts import megatron_layout, random_layout
from simulator.cost.job import Job
from simulator.cost.memory import RESERVED_BYTES, in_flight, layer_activation_bytes, memory_report
from simulator.predict import peak_memory, predict

CLUSTER = SCENARIOS["ondemand"].build()
V100_BYTES = 16160 * 2**20  # what nvidia-smi reports usable of the 16 GiB


def job(layers: int = 24, batch: int = 1024, **training) -> Job:
    return Job(cluster=CLUSTER, model=gpt3_xl(layers), training=TrainingSpec(global_batch=batch, **training))


def test_p1t1_with_40_layers_does_not_fit() -> None:
    """The whole 40-layer model's weights, gradients and fp32 master copy on one 16 GB V100."""
    j, placement = job(40), megatron_layout(64, 40, 1, 1)
    report = memory_report(j, placement)
    assert len(report) == 64
    assert not any(item.fits for item in report)
    assert all(item.total_bytes > V100_BYTES for item in report)
    assert all(item.capacity_bytes == V100_BYTES for item in report)
    assert predict(j, placement, engine="analytic") == (None, ())
    assert predict(j, placement, engine="simpy") == (None, ())


def test_p8t1_with_40_layers_fits() -> None:
    j, placement = job(40), megatron_layout(64, 40, 8, 1)
    report = memory_report(j, placement)
    assert all(item.fits for item in report)
    prediction, _ = predict(j, placement, engine="analytic")
    assert prediction is not None and prediction.iteration_s > 0
    peaks, fits = peak_memory(j, placement)
    assert fits and len(peaks) == 64 and min(peaks) > RESERVED_BYTES


def test_weights_follow_params() -> None:
    """P1T1, Megatron: fp16 weight + fp16 gradient + fp32 master = 8 B per parameter; SGD keeps no state;
    the tied embedding is held once."""
    model = gpt3_xl(40)
    item = memory_report(job(40), megatron_layout(64, 40, 1, 1))[0]
    params = model.total_params - model.vocab * model.d_model
    assert item.weights_bytes == pytest.approx(8 * params)


def test_adam_needs_more_memory() -> None:
    placement = megatron_layout(64, 24, 8, 1)
    sgd = memory_report(job(), placement)[0].weights_bytes
    adam = memory_report(job(optimizer="adam"), placement)[0].weights_bytes
    assert adam > sgd


def test_report_is_in_device_order_and_totals_add_up() -> None:
    report = memory_report(job(), random_layout(64, 24, 8, 8, 0))
    assert [item.device for item in report] == list(range(64))
    for item in report:
        assert item.total_bytes == pytest.approx(item.weights_bytes + item.activations_bytes + RESERVED_BYTES)


def activations(j: Job, placement) -> float:
    return max(item.activations_bytes for item in memory_report(j, placement))


def test_gpipe_activations_grow_with_a_rounds_micro_batches() -> None:
    """Per micro-batch of a round the study's runtime keeps 4 checkpoints a layer (both blocks'
    and both layer norms' inputs) and 3 stage buffers, each 8 MiB; its rounds hold 64 at most."""
    placement = random_layout(64, 24, 8, 8, 0)
    held = [activations(job(batch=b, rounds=1), placement) for b in (256, 512, 1024)]
    assert held == sorted(held) and len(set(held)) == 3
    assert held[1] - held[0] == pytest.approx((512 - 256) // 8 * (3 * 4 + 3) * 8 * 2**20)
    by_default = {activations(job(batch=b), placement) for b in (512, 1024, 2048, 4096)}
    assert len(by_default) == 1  # 64 micro-batches a round, whatever the batch


def test_the_study_notes_memory_limits() -> None:
    """The authors' notes: one pipeline of 3-layer stages fits batch 96 without offloading the
    fp32 master weights, not 108; with the offload, 108 fits."""
    from profiler.scenarios import geo

    cluster = geo("p3.2xlarge-8", {"aws": 8}, (0.1, 10), {})
    placement = random_layout(8, 24, 8, 1, 0)

    def fits(batch: int, offload: bool) -> bool:
        j = Job(cluster=cluster, model=gpt3_xl(24), training=TrainingSpec(global_batch=batch, rounds=1, offload=offload))
        return all(item.fits for item in memory_report(j, placement))

    assert fits(96, offload=False) and not fits(108, offload=False)
    assert fits(108, offload=True)


def test_one_f_one_b_activations_do_not_grow() -> None:
    placement = megatron_layout(64, 24, 8, 1)
    held = {activations(job(batch=b), placement) for b in (512, 1024, 2048, 4096)}
    assert len(held) == 1


def test_in_flight() -> None:
    gpipe, megatron = random_layout(64, 24, 8, 8, 0), megatron_layout(64, 24, 8, 1)
    assert in_flight(job(batch=1024, rounds=1), gpipe, 3) == 128
    assert in_flight(job(batch=1024), gpipe, 3) == 64  # two rounds of 64
    assert [in_flight(job(batch=1024), megatron, s) for s in range(8)] == [8, 7, 6, 5, 4, 3, 2, 1]
    assert in_flight(job(batch=24), megatron, 0) == 3


def test_study_runtime_fits_batch_4096() -> None:
    """runtime.py: GPipe checkpoints stage inputs only, which lets batch 4096 fit on a 16 GB V100."""
    for layers in (24, 32, 40):
        assert all(item.fits for item in memory_report(job(layers, 4096), random_layout(64, layers, 8, 8, 0)))


def test_layer_activation_formula() -> None:
    """Korthikanti et al. eq. 2, s·b·h·(10 + 24/t + 5·a·s/(h·t)), at t = 1 and 8."""
    j = job()
    s = h = 2048
    assert layer_activation_bytes(j, 1) == pytest.approx(s * h * (34 + 5 * 16 * s / h))
    assert layer_activation_bytes(j, 8) == pytest.approx(s * h * (10 + 3 + 5 * 16 * s / (h * 8)))


def test_no_recompute_keeps_every_layer() -> None:
    placement = megatron_layout(64, 24, 8, 1)
    assert activations(job(activation_recompute=False), placement) > activations(job(), placement)
