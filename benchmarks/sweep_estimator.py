"""Accuracy of the analytic estimator against the SimPy simulation over every Megatron
configuration and the study's runtime on random seeds 0-2, for the five scenarios and nine
settings. Slow (minutes): run as ``python benchmarks/sweep_estimator.py [CASE ...]``.
Prints one line per configuration to stderr and a summary per case to stdout."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiler.model import TrainingSpec, gpt3_xl  # noqa: E402
from profiler.network.topology import Topology  # noqa: E402
from profiler.scenarios import SCENARIOS  # noqa: E402
from simulator.cost.job import Job  # noqa: E402
from simulator.predict import predict  # noqa: E402
from simulator.study.systems import megatron_placements, study_random_placements  # noqa: E402


def sweep(case: str) -> list[tuple[str, float]]:
    cluster = SCENARIOS[case].build()
    topology = Topology(cluster)
    errors = []
    for layers in (24, 32, 40):
        for batch in (1024, 2048, 4096):
            job = Job(cluster=cluster, model=gpt3_xl(layers), training=TrainingSpec(global_batch=batch))
            placements = list(megatron_placements(cluster.size, layers).values())
            placements += study_random_placements(cluster.size, layers)
            for placement in placements:
                analytic, _ = predict(job, placement, engine="analytic", topology=topology)
                if analytic is None:
                    continue
                simulated, _ = predict(job, placement, engine="simpy", topology=topology)
                error = analytic.iteration_s / simulated.iteration_s - 1
                label = f"{case} {layers}L/{batch} {placement.config} {placement.runtime.value}"
                print(f"{label}: SimPy {simulated.iteration_s:.2f} s, analytic {analytic.iteration_s:.2f} s, "
                      f"{error:+.2%}", file=sys.stderr, flush=True)
                errors.append((label, error))
    return errors


def main() -> None:
    cases = sys.argv[1:] or list(SCENARIOS)
    for case in cases:
        errors = sweep(case)
        worst = max(errors, key=lambda item: abs(item[1]))
        within = sum(abs(e) <= 0.03 for _, e in errors)
        mean = sum(abs(e) for _, e in errors) / len(errors)
        print(f"{case}: {len(errors)} placements, mean |error| {mean:.2%}, {within} within 3%, "
              f"worst {worst[1]:+.2%} ({worst[0]})")


if __name__ == "__main__":
    main()
