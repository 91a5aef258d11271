"""The analytic estimator against the SimPy engine: `sim predict --help` promises within 3%.
Both predictions' breakdowns split the iteration exactly."""

from __future__ import annotations

import dataclasses

import pytest

from profiler.model import TrainingSpec, gpt3_xl
from profiler.scenarios import SCENARIOS
from simulator.cost.job import Job
from simulator.predict import predict
from simulator.prediction import BREAKDOWN_KEYS
from simulator.study.systems import megatron_placements, study_random_placements

PLACEMENTS = dict(megatron_placements(64, 24)) | {"random0": study_random_placements(64, 24)[0]}


@pytest.mark.parametrize("name", ["P8T1D8", "P2T1D32", "P4T2D8", "random0"])
@pytest.mark.parametrize("case", list(SCENARIOS))
def test_analytic_within_3_percent_of_simpy(case: str, name: str) -> None:
    job = Job(cluster=SCENARIOS[case].build(), model=gpt3_xl(24), training=TrainingSpec(global_batch=1024))
    analytic, _ = predict(job, PLACEMENTS[name], engine="analytic")
    simpy, _ = predict(job, PLACEMENTS[name], engine="simpy")
    assert analytic.iteration_s == pytest.approx(simpy.iteration_s, rel=0.03)
    for prediction in (analytic, simpy):
        assert set(prediction.breakdown) == set(BREAKDOWN_KEYS)
        assert sum(prediction.breakdown.values()) == pytest.approx(prediction.iteration_s, rel=1e-9)
        assert min(prediction.breakdown.values()) >= -1e-9 * prediction.iteration_s
        assert prediction.breakdown["compute_s"] > 0


@pytest.mark.parametrize("case", ["spot", "universities"])
def test_parameter_servers_off_replica_0_agree_too(case: str) -> None:
    """Plans put each stage's parameter server on its own replica (Placement.ps_servers): both
    engines serve from it, and they agree as they do for replica 0."""
    base = study_random_placements(64, 24)[1]
    placement = dataclasses.replace(base, ps_servers=(3, 1, 4, 1, 5, 2, 6, 5))
    job = Job(cluster=SCENARIOS[case].build(), model=gpt3_xl(24), training=TrainingSpec(global_batch=1024))
    analytic, _ = predict(job, placement, engine="analytic")
    simpy, _ = predict(job, placement, engine="simpy")
    assert analytic.iteration_s == pytest.approx(simpy.iteration_s, rel=0.03)
    assert analytic.iteration_s != pytest.approx(predict(job, base, engine="analytic")[0].iteration_s, rel=1e-6)
