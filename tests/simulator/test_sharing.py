"""Ranks that share compute (a host's CPU cores, one GPU): the cluster fields, exact timelines of
process sharing in the engine and the task timer, and the estimator held to the engine."""

from __future__ import annotations

import dataclasses

import pytest

from profiler.cluster import Cluster, Device, Link
from profiler.errors import InputError
from profiler.model import TrainingSpec, gpt_small
from profiler.network.routes import Network, Route
from profiler.trace import Category
from scheduler.layouts import blocks_layout, megatron_layout
from scheduler.placement import Sync
from simulator.cost.job import Job
from simulator.cost.sharing import (
    CPU_BUSY_SHARE,
    LOOPBACK_COPY_CORES,
    Task,
    Unit,
    cpu_unit,
    fair_speeds,
    run_tasks,
    shared_units,
)
from simulator.engine.simulate import simulate
from simulator.lowering.program import Op, Program, Stream, Transfer
from simulator.predict import predict

NO_NETWORK = Network(resource_names=(), capacities_bytes_per_s=(), routes={})


def test_cluster_fields_round_trip_and_bad_values_are_refused(cpu_cluster) -> None:
    cluster = cpu_cluster()
    gpu = dataclasses.replace(cluster, devices=tuple(Device(id=i, gpu="H100-80GB", host="local", gpu_index=i // 2)
                                                     for i in range(4)))
    machine = dataclasses.replace(cluster, hosts=(dataclasses.replace(cluster.hosts[0], machine="m"),))
    for c in (cluster, gpu, machine):
        assert Cluster.from_json(c.to_json()) == c
    doc = cluster.to_json()
    doc["hosts"][0]["cpu_cores"] = 0
    with pytest.raises(InputError, match="cpu_cores must be a whole number of at least 1"):
        Cluster.from_json(doc)
    doc = cluster.to_json()
    doc["hosts"].append(dict(doc["hosts"][0], name="other", machine="m", cpu_cores=4))
    doc["hosts"][0]["machine"] = "m"
    with pytest.raises(InputError, match="hosts on machine 'm' give different cpu_cores"):
        Cluster.from_json(doc)
    doc = gpu.to_json()
    doc["devices"][1]["gpu_index"] = -1
    with pytest.raises(InputError, match=r"devices\[1\]: gpu_index must be 0 or more"):
        Cluster.from_json(doc)


def test_units_count_ranks_at_full_speed(cpu_cluster, cpu_profile) -> None:
    # One-thread ranks: 2 busy cores are 2 x CPU_BUSY_SHARE ranks at full speed; a loopback
    # transfer's side (at the host's interconnect rate) takes half of LOOPBACK_COPY_CORES.
    # Two-thread ranks: half of both.
    assert shared_units(cpu_cluster(), (cpu_profile(1),)) == (
        Unit(name="local:cpu", capacity=2 * CPU_BUSY_SHARE, devices=(0, 1, 2, 3), copy_bytes_per_s=1e10,
             copy_ranks=LOOPBACK_COPY_CORES / 2),)
    assert shared_units(cpu_cluster(), (cpu_profile(2),))[0] == cpu_unit("local:cpu", 2, 2, (0, 1, 2, 3), 1e10)
    assert cpu_unit("c", 2, 2, (0,), 1e10).capacity == CPU_BUSY_SHARE
    assert cpu_unit("c", 2, 2, (0,), 1e10).copy_ranks == LOOPBACK_COPY_CORES / 4
    # Two one-thread ranks on two cores never meet computing, but their transfers copy on the cores.
    assert shared_units(cpu_cluster(2), (cpu_profile(1),)) == (cpu_unit("local:cpu", 2, 1, (0, 1), 1e10),)
    assert shared_units(cpu_cluster(1), (cpu_profile(1),)) == ()  # one rank alone: nothing shared
    assert shared_units(cpu_cluster(cores=None), (cpu_profile(1),)) == ()
    gpu = dataclasses.replace(cpu_cluster(), devices=tuple(Device(id=i, gpu="H100-80GB", host="local", gpu_index=i // 2)
                                                           for i in range(3)))
    assert shared_units(gpu) == (Unit(name="local:gpu0", capacity=1.0, devices=(0, 1)),)  # copies cost it nothing
    # Two emulated hosts on one machine share its cores.
    emulated = Cluster(name="emulated", hosts=tuple(dataclasses.replace(cpu_cluster().hosts[0], name=f"h{i}", machine="m")
                                                    for i in range(2)),
                       devices=tuple(Device(id=i, gpu="CPU", host=f"h{i // 2}") for i in range(4)),
                       links=(Link(a="here", b="here", latency_s=0.01, bandwidth_bytes_per_s=1e8),))
    assert shared_units(emulated, (cpu_profile(1),)) == (cpu_unit("m:cpu", 2, 1, (0, 1, 2, 3), 1e10),)
    slower = dataclasses.replace(emulated, hosts=(emulated.hosts[0], dataclasses.replace(
        emulated.hosts[1], interconnect_bandwidth_bytes_per_s=2e9)))
    assert shared_units(slower, (cpu_profile(1),))[0].copy_bytes_per_s == 2e9  # the slowest loopback


def test_tasks_share_a_unit_exactly() -> None:
    # Three 1 s tasks on 2 cores: each at 2/3 speed, all end at 1.5 s. Then one released at 1 s
    # on a 1-rank unit beside a 2 s task: alone until 1, then half speed: ends at 3, the other at 3.
    assert run_tasks([Task(work_s=1.0, unit=0)] * 3, [2.0]) == [(0.0, pytest.approx(1.5))] * 3
    times = run_tasks([Task(work_s=2.0, unit=0), Task(work_s=1.0, unit=0, release_s=1.0)], [1.0])
    assert times == [(0.0, pytest.approx(3.0)), (1.0, pytest.approx(3.0))]
    # A chain: the second waits for the first and a task of its own device (unshared).
    times = run_tasks([Task(work_s=1.0, unit=0), Task(work_s=0.5), Task(work_s=1.0, unit=0, after=(0, 1))], [1.0])
    assert times[2] == (1.0, 2.0)
    with pytest.raises(RuntimeError, match="cycle"):
        run_tasks([Task(work_s=1.0, after=(1,)), Task(work_s=1.0, after=(0,))], [])


def test_works_share_a_unit_max_min_fairly_up_to_their_demand() -> None:
    # Two copy sides wanting half a core each beside a rank's compute, on one core: a third each.
    assert fair_speeds(1.0, [0.5, 1.0, 0.5]) == pytest.approx([2 / 3, 1 / 3, 2 / 3])
    assert fair_speeds(2.0, [0.5, 1.0, 0.5]) == [1.0, 1.0, 1.0]  # room for all
    assert fair_speeds(1.0, [0.2, 1.0, 1.0]) == pytest.approx([1.0, 0.4, 0.4])  # the small one is not held back
    # As tasks: the sides' 1 s each end at 1.5 s; the compute's 2 s has 1.5 s left then, alone.
    sides = Task(work_s=1.0, unit=0, demand=0.5)
    assert run_tasks([sides, sides, Task(work_s=2.0, unit=0)], [1.0]) == [
        (0.0, pytest.approx(1.5)), (0.0, pytest.approx(1.5)), (0.0, pytest.approx(3.0))]


def test_a_loopback_transfer_copies_on_the_unit() -> None:
    # Devices 0-2 share one core whose loopback moves 1 GB/s with each side taking half a core.
    # Device 0 sends 1 GB to device 1 (the network alone: 1 s) while device 2 computes for 2 s:
    # as above, the copy's sides end at 1.5 s, which delivers it; the compute ends at 3 s. To
    # device 3, on no unit, nothing is copied on the core: delivered at 1 s, the compute alone.
    unit = Unit(name="core", capacity=1.0, devices=(0, 1, 2), copy_bytes_per_s=1e9, copy_ranks=0.5)
    route = Route(resources=(), flow_cap_bytes_per_s=1e9, latency_s=0.0)
    network = Network(resource_names=(), capacities_bytes_per_s=(), routes={(0, 1): route, (0, 3): route})

    def program(to: int) -> Program:
        return Program(streams=(
            Stream(name="send", devices=(0,), main=True, ops=(Op(id=0, category=Category.PIPELINE, label="s", sends=(0,)),)),
            Stream(name="recv", devices=(to,), main=True, ops=(Op(id=1, category=Category.PIPELINE, label="r", recvs=(0,)),)),
            Stream(name="c", devices=(2,), main=True, ops=(Op(id=2, category=Category.FORWARD, label="F", duration_s=2.0),))),
            transfers=(Transfer(id=0, src_device=0, dst_device=to, size_bytes=1e9, category=Category.PIPELINE),))
    assert simulate(program(1), network, units=(unit,)).stream_end_s == {
        "send": pytest.approx(1.5), "recv": pytest.approx(1.5), "c": pytest.approx(3.0)}
    assert simulate(program(3), network, units=(unit,)).stream_end_s == {"send": 1.0, "recv": 1.0, "c": 2.0}


def test_a_tensor_parallel_worker_shares_per_rank() -> None:
    # A 2-rank worker and a 1-rank one, 1 s each: three ranks on 2 cores, each at 2/3 speed, all
    # done at 1.5 s. With only rank 0 of the worker sharing one core with the other worker, that
    # rank runs at half speed and holds the worker's op until 2 s; its rank 1 computes alone.
    program = Program(streams=(Stream(name="tp", devices=(0, 1), main=True, ops=(
        Op(id=0, category=Category.FORWARD, label="F", duration_s=1.0),)), Stream(name="one", devices=(2,), main=True,
        ops=(Op(id=1, category=Category.FORWARD, label="F", duration_s=1.0),))))
    result = simulate(program, NO_NETWORK, units=(Unit(name="cores", capacity=2.0, devices=(0, 1, 2)),))
    assert result.stream_end_s == {"tp": pytest.approx(1.5), "one": pytest.approx(1.5)}
    result = simulate(program, NO_NETWORK, units=(Unit(name="core", capacity=1.0, devices=(0, 2)),))
    assert result.stream_end_s == {"tp": pytest.approx(2.0), "one": pytest.approx(2.0)}


def test_tasks_far_from_time_zero_still_end() -> None:
    # At 1e5 s a float cannot step by what such tasks have left: they end where they are due.
    times = run_tasks([Task(work_s=1.0, unit=0, release_s=1e5)] * 5, [2.0])
    assert times == [(1e5, pytest.approx(1e5 + 2.5))] * 5


def test_engine_processor_shares_compute_on_a_unit() -> None:
    # Streams on devices 0..2 share one core; device 3 computes alone. A: 1 s, B: 2 s, C: 1 s
    # after A. Until 2 s A and B share (each at 1/2), so A ends at 2; then B (1 s left) and C
    # share until B ends at 4 and C at 4; D ends at 1.
    def stream(name: str, device: int, *durations: float) -> Stream:
        ops = tuple(Op(id=device * 10 + i, category=Category.FORWARD, label=f"{name}{i}", duration_s=d)
                    for i, d in enumerate(durations))
        return Stream(name=name, devices=(device,), main=True, ops=ops)
    program = Program(streams=(stream("a", 0, 1.0, 1.0), stream("b", 1, 2.0), stream("d", 3, 1.0)))
    result = simulate(program, NO_NETWORK, units=(Unit(name="core", capacity=1.0, devices=(0, 1, 2)),))
    assert result.stream_end_s == {"a": pytest.approx(4.0), "b": pytest.approx(4.0), "d": 1.0}
    alone = simulate(program, NO_NETWORK)
    assert alone.stream_end_s == {"a": 2.0, "b": 2.0, "d": 1.0}


PLACEMENTS = {
    "P2D2 gpipe": blocks_layout([0, 1, 2, 3], 4, 2, 2),
    "P4D1 gpipe": blocks_layout([0, 1, 2, 3], 4, 4, 1),
    "P1D4 ps": blocks_layout([0, 1, 2, 3], 4, 1, 4),
    "P4 1f1b": megatron_layout(4, 4, 4, 1),
    "P2D2 1f1b": megatron_layout(4, 4, 2, 1),
    "P1D4 ring": megatron_layout(4, 4, 1, 1),
    "P2T2 1f1b": megatron_layout(4, 4, 2, 2),  # two 2-rank tensor-parallel workers on 2 cores
    "P1T2D2 ring": megatron_layout(4, 4, 1, 2),
}


@pytest.mark.parametrize("name", PLACEMENTS)
@pytest.mark.parametrize("batch", [4, 8])
def test_the_estimator_times_shared_compute_as_the_engine_does(cpu_cluster, cpu_profile, name, batch) -> None:
    training = TrainingSpec(global_batch=batch, micro_batch=1, precision="fp32", optimizer="sgd")
    shared = Job(cluster=cpu_cluster(), model=gpt_small(), training=training, profiles=(cpu_profile(),))
    alone = dataclasses.replace(shared, cluster=cpu_cluster(cores=None))
    placement = PLACEMENTS[name]
    engine, _ = predict(shared, placement, engine="simpy")
    estimate, _ = predict(shared, placement, engine="analytic")
    unshared, _ = predict(alone, placement, engine="simpy")
    assert estimate.iteration_s == pytest.approx(engine.iteration_s, rel=0.01)
    assert engine.iteration_s > 1.1 * unshared.iteration_s  # four ranks on two cores do slow down
    for key, value in engine.breakdown.items():
        assert estimate.breakdown[key] == pytest.approx(value, rel=0.05, abs=0.01 * engine.iteration_s), key


@pytest.mark.parametrize("name,placement,unit", [
    # Two replicas of three on one core, the third alone: the stage's sync waits for the slow two,
    # which is waiting, not a slower network.
    ("P1D3 ps, 2 of 3 on a core", blocks_layout([0, 1, 2], 4, 1, 3), (0, 1)),
    ("P1D3 ring, 2 of 3 on a core", dataclasses.replace(blocks_layout([0, 1, 2], 4, 1, 3), sync=Sync.RING), (0, 1)),
    ("P2D2 1f1b, a replica of each stage on a core", megatron_layout(4, 4, 2, 1), (0, 2)),
    # Two ranks on two cores: they never wait for a core, but their transfers copy on them.
    ("P2 gpipe on 2 of the 4 cores' devices", blocks_layout([0, 1], 4, 2, 1), (0, 1, 2, 3)),
])
def test_the_estimator_follows_the_engine_where_some_ranks_share(cpu_cluster, cpu_profile, name, placement, unit) -> None:
    training = TrainingSpec(global_batch=6 * placement.dp, micro_batch=1, precision="fp32", optimizer="sgd")
    cores = 2.0 if len(unit) == 4 else 1.0
    units = (Unit(name="cores", capacity=cores, devices=unit, copy_bytes_per_s=1e8, copy_ranks=LOOPBACK_COPY_CORES / 2),)
    job = Job(cluster=cpu_cluster(), model=gpt_small(), training=training, profiles=(cpu_profile(),), units=units)
    engine, _ = predict(job, placement, engine="simpy")
    estimate, _ = predict(job, placement, engine="analytic")
    assert estimate.iteration_s == pytest.approx(engine.iteration_s, rel=0.01)
    assert estimate.breakdown["compute_s"] >= 0.9 * engine.breakdown["compute_s"]  # no negative optimizer steps
