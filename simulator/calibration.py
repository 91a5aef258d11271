"""Solve the compute model's two GEMM efficiencies from a measured iteration, not from a guess.

FACTS.md §2: Megatron on one p3.16xlarge (8 V100 over NVLink), pipeline 8, GPT3-XL 24 layers,
batch 64, micro-batch 1, fp16, took 4.23 s per iteration with activation recompute and 3.10 s
without. The simulator predicts that very run from the efficiencies (forward, backward); two
measurements fix two unknowns. Newton's method on log-efficiencies, starting from the per-layer
reading of the same facts, converges in a few steps (about 0.1 s, once per process).
"""

from __future__ import annotations

import math

from profiler.cluster import Cluster
from profiler.model import TrainingSpec, gpt3_xl
from profiler.scenarios import ondemand
from scheduler.layouts import megatron_layout
from simulator.compute import layer_efficiency
from simulator.estimator import estimate
from simulator.job import Job, stage_costs
from simulator.topology import Topology

REFERENCE_WITH_RECOMPUTE_S = 4.23  # FACTS.md §2
REFERENCE_WITHOUT_RECOMPUTE_S = 3.10  # FACTS.md §2
REFERENCE_BATCH = 64
REFERENCE_LAYERS = 24
REFERENCE_PIPELINE = 8


def reference_cluster() -> Cluster:
    """One p3.16xlarge: the first host of the on-demand scenario."""
    full = ondemand()
    host = full.hosts[0]
    return Cluster(name="p3.16xlarge", hosts=(host,), links=full.links,
                   devices=tuple(d for d in full.devices if d.host == host.name))


def reference_iteration_s(efficiency: tuple[float, float], recompute: bool) -> float:
    cluster = reference_cluster()
    job = Job(cluster=cluster, model=gpt3_xl(REFERENCE_LAYERS),
              training=TrainingSpec(global_batch=REFERENCE_BATCH, activation_recompute=recompute))
    topology = Topology(cluster)
    placement = megatron_layout(cluster.size, REFERENCE_LAYERS, REFERENCE_PIPELINE, 1)
    costs = stage_costs(job, topology, placement, efficiency)
    return estimate(job, topology, placement, costs=costs).iteration_s


def _residual(log_eff: tuple[float, float]) -> tuple[float, float]:
    eff = (math.exp(log_eff[0]), math.exp(log_eff[1]))
    return (math.log(reference_iteration_s(eff, True) / REFERENCE_WITH_RECOMPUTE_S),
            math.log(reference_iteration_s(eff, False) / REFERENCE_WITHOUT_RECOMPUTE_S))


def solve_efficiency(tolerance: float = 1e-9, steps: int = 20) -> tuple[float, float]:
    x = [math.log(e) for e in layer_efficiency()]
    for _ in range(steps):
        r = _residual((x[0], x[1]))
        if max(abs(v) for v in r) < tolerance:
            break
        h = 1e-6
        jac = []
        for i in range(2):
            shifted = list(x)
            shifted[i] += h
            rs = _residual((shifted[0], shifted[1]))
            jac.append(((rs[0] - r[0]) / h, (rs[1] - r[1]) / h))  # column i
        (a, c), (b, d) = jac  # J = [[a, b], [c, d]]
        det = a * d - b * c
        x[0] -= (d * r[0] - b * r[1]) / det
        x[1] -= (-c * r[0] + a * r[1]) / det
    else:
        raise RuntimeError("compute calibration did not converge")
    efficiency = (math.exp(x[0]), math.exp(x[1]))
    if not all(0 < e <= 1 for e in efficiency):
        raise RuntimeError(f"compute calibration gave efficiencies {efficiency} outside (0, 1]")
    return efficiency
