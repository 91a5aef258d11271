"""The systems compared (docs/facts.md §4) and the table that ranks them."""

from __future__ import annotations

import pytest

from profiler.model import TrainingSpec, gpt3_xl
from profiler.scenarios import SCENARIOS
from simulator.cost.job import Job
from simulator.cost.memory import memory_report
from simulator.study.systems import megatron_configs, megatron_placements, study_random_placements
from simulator.study.table import predict_table

DEGREES = (1, 2, 4, 8)


def test_megatron_configs_24_layers() -> None:
    configs = megatron_configs(64, 24)
    assert set(configs) == {(p, t) for p in DEGREES for t in DEGREES}
    assert len(configs) == 16


def test_megatron_configs_32_layers() -> None:
    configs = set(megatron_configs(64, 32))
    expected = {(p, t) for p in (1, 2, 4, 8, 16, 32) for t in DEGREES if p * t <= 64}
    assert configs == expected
    assert (16, 4) in configs and (32, 2) in configs
    assert (16, 8) not in configs and (32, 4) not in configs


def test_megatron_configs_40_layers() -> None:
    assert set(megatron_configs(64, 40)) == {(p, t) for p in (1, 2, 4, 8) for t in DEGREES}


def test_megatron_placements_named_by_config() -> None:
    placements = megatron_placements(64, 24)
    assert "P8T1D8" in placements and "P1T8D8" in placements and "P2T4D8" in placements
    assert all(name == p.config for name, p in placements.items())


def test_study_random_placements_are_three_distinct_seeds() -> None:
    placements = study_random_placements(64, 24)
    assert len(placements) == 3
    assert len({p.devices for p in placements}) == 3
    assert all(p.config == "P8T1D8" for p in placements)


@pytest.fixture(scope="module")
def spot_table():
    return predict_table(SCENARIOS["spot"].build(), "spot", gpt3_xl, [24, 40], [1024])


def test_table_rows(spot_table) -> None:
    assert spot_table.case == "spot" and spot_table.engine == "analytic"
    assert [(r.layers, r.batch) for r in spot_table.rows] == [(24, 1024), (40, 1024)]
    for row in spot_table.rows:
        assert set(row.systems) == {"megatron_pp", "megatron_optimal", "ours_random"}
        assert row.systems["megatron_pp"].config == "P8T1D8"
        assert row.systems["megatron_pp"].iteration_s == row.megatron_configs["P8T1D8"]
        assert set(row.megatron_configs) == {f"P{p}T{t}D{64 // (p * t)}" for p, t in megatron_configs(64, row.layers)}


def test_megatron_optimal_is_the_fastest_fitting_config(spot_table) -> None:
    for row in spot_table.rows:
        fitting = {k: v for k, v in row.megatron_configs.items() if v is not None}
        best = min(fitting, key=fitting.get)
        assert row.systems["megatron_optimal"].config == best
        assert row.systems["megatron_optimal"].iteration_s == min(fitting.values())


def test_configs_that_do_not_fit_are_none(spot_table) -> None:
    cluster = SCENARIOS["spot"].build()
    for row in spot_table.rows:
        job = Job(cluster=cluster, model=gpt3_xl(row.layers), training=TrainingSpec(global_batch=row.batch))
        for name, placement in megatron_placements(64, row.layers).items():
            fits = all(item.fits for item in memory_report(job, placement))
            assert (row.megatron_configs[name] is not None) == fits, name
    assert spot_table.rows[1].megatron_configs["P1T1D64"] is None  # 40 layers on one V100


def test_ours_random_is_the_mean_of_three_seeds(spot_table) -> None:
    from simulator.predict import predict
    cluster = SCENARIOS["spot"].build()
    job = Job(cluster=cluster, model=gpt3_xl(24), training=TrainingSpec(global_batch=1024))
    seconds = [predict(job, p, engine="analytic")[0].iteration_s for p in study_random_placements(64, 24)]
    assert spot_table.rows[0].systems["ours_random"].iteration_s == pytest.approx(sum(seconds) / 3, rel=1e-12)


def test_table_json(spot_table) -> None:
    doc = spot_table.to_json()
    assert doc["schema"] == "prediction-table/1"
    assert "config" not in doc["rows"][0]["systems"]["ours_random"]
    assert doc["rows"][1]["megatron_configs"]["P1T1D64"] is None


def test_configs_whose_replicas_do_not_split_the_batch_are_left_out() -> None:
    """Batch 1000 does not split into 64, 32 or 16 replicas; None still means only "does not fit"."""
    cluster = SCENARIOS["spot"].build()
    row = predict_table(cluster, "spot", gpt3_xl, [24], [1000]).rows[0]
    assert set(row.megatron_configs) == {name for name, p in megatron_placements(64, 24).items() if 1000 % p.dp == 0}
    assert "P1T1D64" not in row.megatron_configs and "P8T1D8" in row.megatron_configs
    job = Job(cluster=cluster, model=gpt3_xl(24), training=TrainingSpec(global_batch=1000))
    for name, seconds in row.megatron_configs.items():
        fits = all(item.fits for item in memory_report(job, megatron_placements(64, 24)[name]))
        assert (seconds is not None) == fits, name
    assert row.systems["ours_random"].iteration_s is not None  # 1000 = 8 × 125


def test_study_runtime_left_out_when_layers_do_not_divide_over_8() -> None:
    row = predict_table(SCENARIOS["spot"].build(), "spot", gpt3_xl, [12], [1024]).rows[0]
    assert set(row.systems) == {"megatron_optimal"}
    assert {name[:2] for name in row.megatron_configs} == {"P1", "P2", "P4"}


@pytest.mark.parametrize("vocab,cutoffs", [(29056, (1000, 2000, 5000)), (3000, (1000, 2000)), (512, None)])
def test_the_study_runtimes_adaptive_head_keeps_only_cutoffs_below_the_vocabulary(vocab, cutoffs) -> None:
    from dataclasses import replace

    cluster = SCENARIOS["ondemand"].build()
    model = replace(gpt3_xl(24), vocab=vocab)
    job = Job(cluster=cluster, model=model, training=TrainingSpec(global_batch=1024))
    placement = study_random_placements(cluster.size, 24)[0]
    assert job.head_cutoffs(placement) == cutoffs
    table = predict_table(cluster, "ondemand", lambda n: replace(gpt3_xl(n), vocab=vocab), [24], [1024])
    assert table.rows[0].systems["ours_random"].iteration_s > 0
