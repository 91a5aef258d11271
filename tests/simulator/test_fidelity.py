"""The development set (simulator.study.fidelity): the data as published, each series' mechanism on
its own, the engine against the estimator on every figure, and `sim fidelity`."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from profiler.network.tcp import GOODPUT_FRACTION, slow_start_s
from profiler.network.topology import Topology, route_rates
from scheduler.placement import Sync
from scheduler.runtimes import NCCL_CHUNK_BYTES
from simulator.cli.main import main
from simulator.cost.job import stage_costs
from simulator.predict import predict
from simulator.study import fidelity

GBIT = 1e9 / 8


@pytest.fixture(scope="module")
def analytic() -> list[fidelity.Figure]:
    return fidelity.evaluate("analytic")


def test_the_set_is_the_147_published_figures() -> None:
    runs = fidelity.load_runs()
    assert len(runs) == 147
    assert Counter(m.series for m in runs) == {"dp-sync-scaling": 35, "pipeline-batch": 20, "pipeline-layers": 15, "homogeneous-64": 15,
                         "megatron-64-p3.2xlarge": 18, "p2p-transfer": 40, "megatron-8-p3.16xlarge-seed": 4}
    p2p = next(m for m in runs if m.series == "p2p-transfer" and m.column == "nccl 64MB" and m.setting == "default")
    assert p2p.seconds == pytest.approx(0.055)  # published in milliseconds


def test_tc_settings_become_one_region_of_p3_2xlarge() -> None:
    assert fidelity.network("default") == (1e-4, 10)
    assert fidelity.network("10ms-1Gbps") == (0.01, 1)
    assert fidelity.network("5Gbps") == (1e-4, 5) and fidelity.network("1ms") == (0.001, 10)
    cluster = fidelity.instances(8, "50ms-1Gbps")
    assert cluster.size == 8 and len({h.region for h in cluster.hosts}) == 1
    route = Topology(cluster).route(0, 5)
    assert route.latency_s == pytest.approx(0.05)


def test_the_study_plans_follow_its_rank_order() -> None:
    """Rank r·8 + s is stage s of pipeline r (comm/comm_utils.py)."""
    placement = fidelity.study_plan(2, 24, Sync.PS)
    assert placement.devices[3] == ((3,), (11,)) and placement.pp == 8 and placement.dp == 2


def test_a_single_transfer_is_latency_slow_start_and_bytes() -> None:
    """gloo 64 MiB under 10 ms: one connection, its 3 MiB window over 20 ms, slow start from 10
    segments, one latency."""
    program, topology = fidelity.transfer_program("10ms", "gloo 64MB")
    route = topology.route(0, 1)
    (rate,) = route_rates([route], topology.capacities)
    size = 64 * 2**20
    assert rate == pytest.approx(3 * 2**20 / 0.02)
    expected = 0.01 + slow_start_s(size, rate, 0.02, 1) + size / rate
    for engine in ("analytic", "simpy"):
        assert fidelity._transfer_s("10ms", "gloo 64MB", engine) == pytest.approx(expected, rel=1e-9)
    # NCCL's sixteen connections carry the NIC's rate
    _, nccl = fidelity.transfer_program("10ms", "nccl 64MB")
    assert route_rates([nccl.route(0, 1)], nccl.capacities)[0] == pytest.approx(10 * GBIT * GOODPUT_FRACTION)


def test_the_central_server_costs_two_chains_of_the_stage_gradient() -> None:
    """dp-sync-scaling at 10 ms, 1 Gbit/s: D pipelines cost the single one plus stage 0's reduce and
    broadcast (its 3 layers and the embedding in fp16), each a chain that moves the buffer once at
    the link's rate, plus its first chunk's crossing of each further hop."""
    job, placement = fidelity._dp_sync("10ms-1Gbps", "single")
    single = predict(job, placement, engine="analytic")[0].iteration_s
    rate = GBIT * GOODPUT_FRACTION
    size = (3 * job.model.params_per_layer + job.model.embedding_params) * 2
    for d in (2, 4, 8):
        job, placement = fidelity._dp_sync("10ms-1Gbps", f"central-{d}")
        added = predict(job, placement, engine="analytic")[0].iteration_s - single
        fill = (d - 2) * (0.01 + NCCL_CHUNK_BYTES / rate)
        chains = 2 * (size / rate + 0.01 + fill)
        assert added == pytest.approx(chains, rel=0.03), d


def test_a_compute_bound_pipeline_adds_its_slowest_stage_per_micro_batch() -> None:
    """One pipeline without tc: each further micro-batch costs its slowest stage's forward plus its
    slowest backward; at 1 Gbit/s, two transfers of 8 MiB (one a half)."""
    def seconds(setting: str, batch: int) -> float:
        job, placement = fidelity.PLANS["pipeline-batch"](setting, str(batch))
        return predict(job, placement, engine="analytic")[0].iteration_s

    job, placement = fidelity.PLANS["pipeline-batch"]("default", "64")
    costs = stage_costs(job, Topology(job.cluster), placement)
    slowest = max(c[0].forward_s for c in costs) + max(c[0].backward_s for c in costs)
    assert (seconds("default", 96) - seconds("default", 64)) / 32 == pytest.approx(slowest, rel=1e-6)
    link = job.model.activation_bytes(1, "fp16") / (GBIT * GOODPUT_FRACTION)
    assert (seconds("10ms-1Gbps", 96) - seconds("10ms-1Gbps", 64)) / 32 == pytest.approx(2 * link, rel=1e-6)


def test_homogeneous_64_runs_two_rounds() -> None:
    job, placement = fidelity.PLANS["homogeneous-64"]("default", "3")
    assert job.rounds(placement) == ((0, 64), (64, 128))


def test_the_engine_agrees_with_the_estimator_on_every_figure(analytic) -> None:
    simpy = fidelity.evaluate("simpy")
    for a, b in zip(analytic, simpy):
        assert (a.series, a.setting, a.column) == (b.series, b.setting, b.column)
        assert a.predicted_s == pytest.approx(b.predicted_s, rel=0.03), (a.series, a.setting, a.column)


def test_every_figure_is_predicted_and_the_summary_adds_up(analytic) -> None:
    assert len(analytic) == 147 and all(f.predicted_s and f.predicted_s > 0 for f in analytic)
    doc = fidelity.to_json(analytic, "analytic")
    assert doc["schema"] == "fidelity/1" and doc["count"] == 147
    assert doc["mape"] == pytest.approx(sum(abs(f["error"]) for f in doc["figures"]) / 147)
    weighted = sum(v["mape"] * v["count"] for v in doc["series"].values()) / 147
    assert weighted == pytest.approx(doc["mape"])


def test_sim_fidelity_prints_the_errors_and_ends_with_the_mape(capsys, tmp_path) -> None:
    picture = tmp_path / "fidelity.png"
    assert main(["fidelity", "--series", "p2p-transfer", "pipeline-batch", "--quiet", "--plot", str(picture)]) == 0
    out = capsys.readouterr().out.rstrip().splitlines()
    assert out[-1].startswith("fidelity: MAPE ") and out[-1].endswith("% over 60 figures")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["fidelity", "--series", "p2p-transfer", "--json", "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["count"] == 40 and set(doc["series"]) == {"p2p-transfer"}


@pytest.mark.parametrize("args, message", [
    (["--series", "nope"], "unknown series 'nope'"),
    (["--plot", "out.txt"], "name the file .png"),
])
def test_sim_fidelity_refuses_bad_input(capsys, args, message) -> None:
    assert main(["fidelity", "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
