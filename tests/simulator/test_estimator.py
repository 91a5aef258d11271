"""The analytic estimator is held within 3% of the SimPy simulation on every built-in scenario,
for the systems of the study's table, in three settings that hold each layer count and each batch
once (benchmarks/sweep_estimator.py runs all nine and every Megatron configuration)."""

from __future__ import annotations

import pytest

from profiler.model import TrainingSpec, gpt3_xl
from profiler.network.topology import Topology
from profiler.scenarios import SCENARIOS
from scheduler.layouts import megatron_layout, random_layout
from simulator.cost.job import Job
from simulator.predict import predict
from simulator.study.table import predict_table

TOLERANCE = 0.03
DIAGONAL = [(24, 1024), (32, 2048), (40, 4096)]  # each of the table's layer counts and batches once


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SCENARIOS))
def test_estimator_agrees_with_simpy_on_the_table_systems(case):
    cluster = SCENARIOS[case].build()
    topology = Topology(cluster)
    rows = [row for layers, batch in DIAGONAL for row in predict_table(cluster, case, gpt3_xl, [layers], [batch]).rows]
    failures = []
    for row in rows:
        job = Job(cluster=cluster, model=gpt3_xl(row.layers), training=TrainingSpec(global_batch=row.batch))
        optimal = row.systems["megatron_optimal"].config
        pp, tp = int(optimal[1:optimal.index("T")]), int(optimal[optimal.index("T") + 1:optimal.index("D")])
        placements = {"megatron_pp": megatron_layout(64, row.layers, 8, 1),
                      "megatron_optimal": megatron_layout(64, row.layers, pp, tp),
                      "ours_random seed 0": random_layout(64, row.layers, 8, 8, seed=0)}
        for name, placement in placements.items():
            analytic, _ = predict(job, placement, engine="analytic", topology=topology)
            simulated, _ = predict(job, placement, engine="simpy", topology=topology)
            error = analytic.iteration_s / simulated.iteration_s - 1
            if abs(error) > TOLERANCE:
                failures.append(f"{row.layers}L/{row.batch} {name} {placement.config}: analytic "
                                f"{analytic.iteration_s:.2f} s vs SimPy {simulated.iteration_s:.2f} s ({error:+.1%})")
    assert not failures, "\n".join(failures)


def test_breakdown_sums_to_the_iteration():
    cluster = SCENARIOS["world"].build()
    job = Job(cluster=cluster, model=gpt3_xl(24), training=TrainingSpec(global_batch=256))
    for placement in (megatron_layout(64, 24, 8, 1), random_layout(64, 24, 8, 8, seed=1)):
        for engine in ("simpy", "analytic"):
            prediction, _ = predict(job, placement, engine=engine)
            assert sum(prediction.breakdown.values()) == pytest.approx(prediction.iteration_s, rel=1e-6)
            assert all(value >= 0 for value in prediction.breakdown.values())
            assert prediction.breakdown["compute_s"] > 0 and prediction.breakdown["dp_sync_s"] > 0
