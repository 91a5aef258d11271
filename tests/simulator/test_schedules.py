"""Exact timelines of tiny pipelines, through the real lowering, engine and estimator."""

from __future__ import annotations

import math

import pytest

from profiler.cluster import Cluster, Device, Host, Interconnect
from profiler.errors import InputError
from profiler.model import ModelSpec, TrainingSpec
from profiler.network.topology import Topology
from scheduler.layouts import blocks_layout, megatron_layout
from scheduler.placement import Placement, Schedule
from simulator.cost.job import Job, WorkerCost
from simulator.engine.simulate import simulate
from simulator.estimator.estimate import estimate
from simulator.lowering.lower import lower

FORWARD_S, BACKWARD_S = 1.0, 2.0
MODEL = ModelSpec(name="tiny", layers=12, d_model=64, heads=4, ffn=256, seq_len=16, vocab=128)
HUGE = 1e18  # bytes/s: transfers of the tiny activation take ~1e-15 s


def one_host_per_device(devices: int, latency_s: float, bandwidth: float = HUGE) -> Cluster:
    """Measured (per-pair) form: latency and bandwidth exactly as given, no TCP corrections."""
    hosts = tuple(Host(name=f"h{i}", region="r", interconnect=Interconnect.PCIE,
                       interconnect_bandwidth_bytes_per_s=1e9, interconnect_latency_s=0.0,
                       uplink_bandwidth_bytes_per_s=HUGE) for i in range(devices))
    return Cluster(name="tiny", hosts=hosts,
                   devices=tuple(Device(id=i, gpu="V100-SXM2-16GB", host=f"h{i}") for i in range(devices)),
                   pair_latency_s=tuple(tuple(latency_s for _ in range(devices)) for _ in range(devices)),
                   pair_bandwidth_bytes_per_s=tuple(tuple(bandwidth for _ in range(devices)) for _ in range(devices)))


def fixed_costs(stages: int) -> list[list[WorkerCost]]:
    cost = WorkerCost(forward_s=FORWARD_S, backward_s=BACKWARD_S, forward_tp_s=0.0, backward_tp_s=0.0,
                      optimizer_s=0.0, params=0.0)
    return [[cost] for _ in range(stages)]


def run(placement: Placement, cluster: Cluster, micro_batches: int) -> tuple[float, float]:
    job = Job(cluster=cluster, model=MODEL, training=TrainingSpec(global_batch=micro_batches))
    topology = Topology(cluster)
    costs = fixed_costs(placement.pp)
    program = lower(job, topology, placement, costs=costs)
    result = simulate(program, topology.network((t.src_device, t.dst_device) for t in program.transfers))
    return result.makespan_s, estimate(job, topology, placement, costs=costs).iteration_s


def gpipe(stages: int) -> Placement:
    return blocks_layout(list(range(stages)), MODEL.layers, stages, 1)


def one_f_one_b(stages: int) -> Placement:
    return megatron_layout(stages, MODEL.layers, stages, 1)


@pytest.mark.parametrize("stages", [2, 3, 4])
@pytest.mark.parametrize("micro_batches", [1, 4, 8])
@pytest.mark.parametrize("make", [gpipe, one_f_one_b], ids=["gpipe", "1f1b"])
def test_pipeline_without_communication_cost_is_the_closed_form(make, stages, micro_batches):
    engine, estimator = run(make(stages), one_host_per_device(stages, 0.0), micro_batches)
    closed = (micro_batches + stages - 1) * (FORWARD_S + BACKWARD_S)
    assert engine == pytest.approx(closed, rel=1e-9)
    assert estimator == pytest.approx(closed, rel=1e-9)


@pytest.mark.parametrize("stages", [2, 3, 4])
def test_gpipe_latency_shifts_the_end_by_crossings_times_latency(stages):
    """Each crossing pays the latency once; each of the two barriers (between the halves, at the
    end) ceil(log2 P) latencies after its last rank enters (gloo's dissemination barrier)."""
    latency = 0.25
    engine, estimator = run(gpipe(stages), one_host_per_device(stages, latency), 4)
    rounds = math.ceil(math.log2(stages))
    closed = (4 + stages - 1) * (FORWARD_S + BACKWARD_S) + 2 * (stages - 1) * latency + 2 * rounds * latency
    assert engine == pytest.approx(closed, rel=1e-9)
    assert estimator == pytest.approx(closed, rel=1e-9)


def test_blocking_1f1b_pays_latency_on_every_exchange():
    # Megatron's exchanges block the stage, so latency costs more than the 2(P-1) crossings of
    # the overlapped runtime: 2 stages × 4 micro-batches wait through 7 latencies, not 2.
    latency = 0.25
    engine, estimator = run(one_f_one_b(2), one_host_per_device(2, latency), 4)
    assert engine == pytest.approx(15.0 + 7 * latency, rel=1e-9)
    assert estimator == pytest.approx(engine, rel=1e-9)


def test_slow_link_makes_gpipe_a_flow_shop_bound_by_the_link():
    # 8 MiB-class transfers replaced by a bandwidth that makes one transfer take 1.5 s, longer
    # than any stage: the link is the flow shop's bottleneck machine.
    size = MODEL.activation_bytes(1, "fp16")
    bandwidth = size / 1.5
    engine, estimator = run(gpipe(2), one_host_per_device(2, 0.0, bandwidth), 4)
    forward = FORWARD_S + 1.5 + FORWARD_S + 3 * 1.5  # flow shop F, link, F over 4 jobs
    backward = BACKWARD_S + 1.5 + BACKWARD_S + 3 * BACKWARD_S
    assert engine == pytest.approx(forward + backward, rel=1e-9)
    assert estimator == pytest.approx(engine, rel=1e-9)


def test_runtime_and_schedule_must_match():
    placement = gpipe(2)
    wrong = Placement(pp=placement.pp, dp=placement.dp, tp=placement.tp, stage_layers=placement.stage_layers,
                      devices=placement.devices, schedule=Schedule.ONE_F_ONE_B, sync=placement.sync,
                      runtime=placement.runtime)
    with pytest.raises(InputError, match="runs the 'gpipe' schedule"):
        run(wrong, one_host_per_device(2, 0.0), 4)


def test_gpipe_rounds_repeat_the_flow_shop_with_a_barrier_each() -> None:
    """2 stages, 8 micro-batches in 2 rounds of 4, no communication cost: each round is
    (4 + 1)(F + B); the rounds run one after the other."""
    cluster = one_host_per_device(2, 0.0)
    job = Job(cluster=cluster, model=MODEL, training=TrainingSpec(global_batch=8, rounds=2))
    topology, placement, costs = Topology(cluster), gpipe(2), fixed_costs(2)
    program = lower(job, topology, placement, costs=costs)
    engine = simulate(program, topology.network((t.src_device, t.dst_device) for t in program.transfers)).makespan_s
    closed = 2 * (4 + 1) * (FORWARD_S + BACKWARD_S)
    assert engine == pytest.approx(closed, rel=1e-9)
    assert estimate(job, topology, placement, costs=costs).iteration_s == pytest.approx(closed, rel=1e-9)
