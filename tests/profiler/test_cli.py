"""The profiler's command line, and `sim predict --profile`: what they write, and one-line errors
(exit 2, nothing written) for bad input."""

from __future__ import annotations

import json

import pytest

from profiler.cli import main
from profiler.cluster import load_cluster
from simulator.cli.main import main as sim

pytest.importorskip("torch")


def run(capture, argv: list[str], tool=main) -> tuple[int, str, str]:
    code = tool(argv)
    out, err = capture.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,message", [
    (["compute", "--device", "tpu", "-o", "p.json"], "--device must be cpu, cuda or cuda:N"),
    (["compute", "--d-model", "256", "-o", "p.json"], "needs --heads, --ffn, --seq too"),
    (["compute", "--model", "gpt-small", "--d-model", "256", "--heads", "4", "--ffn", "1024", "--seq", "64",
      "-o", "p.json"], "--model or a shape"),
    (["compute", "--tp", "3", "-o", "p.json"], "--tp 3 does not shard heads 8"),
    (["compute", "--micro-batch", "0", "-o", "p.json"], "--micro-batch must be at least 1"),
    (["compute", "--dtype", "fp8", "-o", "p.json"], "invalid choice: 'fp8'"),
    (["compute", "--repeats", "2", "--tp", "1", "--micro-batch", "1", "--d-model", "64", "--heads", "2",
      "--ffn", "128", "--seq", "16", "--vocab", "256", "-o", "no/such/dir/p.json"], "folder no/such/dir does not exist"),
    (["network", "--spawn", "1", "-o", "c.json"], "needs at least 2 ranks, got --spawn 1"),
    (["network", "--spawn", "2", "--sizes", "0", "4096", "-o", "c.json"], "--sizes must be positive"),
    (["network", "--spawn", "2", "--sizes", "4096", "-o", "c.json"], "at least two different ones"),
    (["network", "-o", "c.json"], "under torchrun (several hosts) or with --spawn N"),
    (["network", "--spawn", "2", "--backend", "nccl", "-o", "c.json"], "--backend nccl needs CUDA"),
    (["compute", "--kind", "TPU-v5", "-o", "p.json"], "--kind 'TPU-v5' is no kind"),
    (["compute", "--vocab", "0", "-o", "p.json"], "--vocab must be positive"),
    (["network", "--spawn", "2", "--regions", "missing.json", "-o", "c.json"], "cannot read regions file"),
    (["compute"], "required: -o/--output"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, argv)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "c.json").exists()


@pytest.fixture(scope="module")
def cpu_profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "cpu.json"
    assert main(["compute", "--model", "gpt-small", "--tp", "1", "--micro-batch", "1", "--repeats", "2",
                 "--warmup", "1", "--threads", "1", "--quiet", "-o", str(path)]) == 0
    return path


def test_compute_writes_a_profile_that_loads(cpu_profile) -> None:
    from profiler.profile import load_profile

    profile = load_profile(cpu_profile)
    assert profile.device_kind == "CPU" and profile.shape["d_model"] == 512 and profile.repeats == 2
    assert [(m.tp, m.micro_batch) for m in profile.layers] == [(1, 1)]


def test_network_spawn_2_writes_a_cluster_file_that_loads(capfd, tmp_path) -> None:
    out = tmp_path / "local.json"
    code, _, err = run(capfd, ["network", "--spawn", "2", "--sizes", "4096", "65536", "1048576", "--repeats", "3",
                                "-o", str(out)])
    assert code == 0, err
    assert "round 1 of 1" in err
    cluster = load_cluster(out)
    assert [d.gpu for d in cluster.devices] == ["CPU", "CPU"] and len(cluster.hosts) == 1
    assert cluster.pair_latency_s[0][1] == cluster.pair_latency_s[1][0] > 0
    assert cluster.pair_bandwidth_bytes_per_s[0][1] > 1e6  # loopback moves well over a MB/s
    doc = json.loads(out.read_text())
    assert [row["bytes"] for row in doc["measured"]["allreduce"]] == [4096, 65536, 1048576]


def cpu_cluster_file(tmp_path, devices: int = 2):
    host = {"name": "local", "region": "here", "interconnect": "pcie", "interconnect_bandwidth_bytes_per_s": 1e10,
            "interconnect_latency_s": 1e-5, "uplink_bandwidth_bytes_per_s": 1e9}
    doc = {"schema": "cluster/1", "name": "cpu", "hosts": [host],
           "devices": [{"id": i, "gpu": "CPU", "host": "local"} for i in range(devices)], "links": []}
    path = tmp_path / "cpu-cluster.json"
    path.write_text(json.dumps(doc))
    return path


def test_sim_predict_says_what_a_profile_lacks(capsys, tmp_path, cpu_profile) -> None:
    cluster = cpu_cluster_file(tmp_path, 8)
    code, _, err = run(capsys, ["predict", "--cluster", str(cluster), "--quiet", "--plan-time-limit", "0"], sim)
    assert code == 2 and "device kind 'CPU' has no datasheet model" in err and "profiler compute --device cpu" in err
    code, _, err = run(capsys, ["predict", "--cluster", str(cluster), "--quiet", "--plan-time-limit", "0",
                                "--profile", str(cpu_profile)], sim)
    assert code == 2 and "measured in fp32, the job trains in fp16" in err
    code, _, err = run(capsys, ["predict", "--case", "spot", "--quiet", "--profile", str(cpu_profile)], sim)
    assert code == 2 and "profile of 'CPU', which cluster 'spot' does not have" in err


def test_sim_predict_a_plan_from_a_profile(capsys, tmp_path, cpu_profile) -> None:
    from profiler.cluster import load_cluster as load
    from profiler.model import TrainingSpec, gpt_small
    from scheduler.layouts import blocks_layout
    from scheduler.plan import Plan, Provenance

    plan = Plan(cluster=load(cpu_cluster_file(tmp_path, 2)), case=None, model=gpt_small(4),
                training=TrainingSpec(global_batch=4, precision="fp32"), placement=blocks_layout([0, 1], 4, 2, 1),
                provenance=Provenance(method="manual", objective="time"))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_json()))
    code, out, err = run(capsys, ["predict", "--plan", str(path), "--json", "--profile", str(cpu_profile)], sim)
    assert code == 0, err
    assert json.loads(out)["iteration_s"] > 0


def test_a_profile_slower_than_the_datasheet_slows_the_table_and_the_footer_says_so(capsys, tmp_path) -> None:
    """A V100 profile of GPT3-XL at exactly the datasheet model's times predicts what the datasheet
    does; one with every compute time doubled predicts more, and the footer names it."""
    from profiler.gpus import gpu_kind
    from profiler.model import TrainingSpec, gpt3_xl
    from profiler.profile import Measured, Profile, Timing
    from simulator.cost.compute import device_compute

    model, training = gpt3_xl(24), TrainingSpec(global_batch=1024)

    def profile(scale: float) -> Profile:
        rows = {"layers": [], "embedding": [], "head": []}
        for tp in (1, 2, 4, 8):
            c = device_compute("V100-SXM2-16GB", model, training, tp)
            t = lambda s: Timing(median_s=scale * s, spread_s=0.0)  # noqa: E731
            rows["layers"].append(Measured(tp=tp, micro_batch=1, forward=t(c.layer.forward_s),
                                           backward=t(c.layer.backward_s), recompute=t(c.layer.recompute_s)))
            rows["embedding"].append(Measured(tp=tp, micro_batch=1, forward=t(c.embedding[0]), backward=t(c.embedding[1])))
            rows["head"].append(Measured(tp=tp, micro_batch=1, forward=t(c.head[0]), backward=t(c.head[1])))
        per_param = device_compute("V100-SXM2-16GB", model, training, 1).optimizer_s_per_param
        return Profile(device_kind="V100-SXM2-16GB", device_name="synthetic", memory_bytes=gpu_kind("V100-SXM2-16GB").memory_bytes,
                       torch_version="-", threads=0, dtype="fp16", host="test", date="2026-11-27", warmup=0, repeats=1,
                       shape={k: getattr(model, k) for k in ("d_model", "heads", "ffn", "seq_len", "vocab")},
                       **{k: tuple(v) for k, v in rows.items()}, optimizer_s_per_param_byte=scale * per_param * 3 / 12)

    seconds = {}
    for name, scale in (("none", None), ("same", 1.0), ("double", 2.0)):
        argv = ["predict", "--case", "ondemand", "--layers", "24", "--batch", "1024", "--plan-time-limit", "0", "--quiet"]
        if scale:
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(profile(scale).to_json()))
            argv += ["--profile", str(path)]
        code, out, err = run(capsys, argv + ["--json"], sim)
        assert code == 0, err
        seconds[name] = json.loads(out)["rows"][0]["systems"]["megatron_pp"]["iteration_s"]
        if scale:
            code, out, _ = run(capsys, argv, sim)
            assert f"V100-SXM2-16GB measured ({path}: synthetic, fp16" in out.splitlines()[-1]
    # the same but for the optimizer step's one kernel launch (5 µs), which a measured step includes
    assert seconds["same"] == pytest.approx(seconds["none"] - 5e-6, rel=1e-9)
    assert seconds["double"] > 1.5 * seconds["none"]


def test_a_regions_file_without_this_host_is_refused_before_measuring(capsys, tmp_path) -> None:
    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps({"some-other-host": "ohio"}))
    code, _, err = run(capsys, ["network", "--spawn", "2", "--regions", str(regions), "-o", str(tmp_path / "c.json")])
    assert code == 2 and "no region for this host" in err and not (tmp_path / "c.json").exists()
