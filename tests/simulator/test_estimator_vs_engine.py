"""The analytic estimator against the SimPy engine: `sim predict --help` promises within 3%.
Both predictions' breakdowns split the iteration exactly."""

from __future__ import annotations

import pytest

from profiler.model import TrainingSpec, gpt3_xl
from profiler.scenarios import SCENARIOS
from simulator.job import Job
from simulator.predict import predict
from simulator.prediction import BREAKDOWN_KEYS
from simulator.systems import megatron_placements, study_random_placements

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
