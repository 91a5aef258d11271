"""`executor run`: the report it writes, and one-line errors (exit 2) for bad plans and flags."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch")

from executor.cli import main  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpu-pipeline-plan.json"


@pytest.mark.distributed
def test_run_writes_a_report_of_every_rank(capsys, tmp_path) -> None:
    out, trace, plot = tmp_path / "run.json", tmp_path / "trace.json", tmp_path / "run.png"
    assert main(["run", str(EXAMPLE), "--iterations", "2", "--quiet", "--out", str(out), "--trace", str(trace),
                 "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.read_text())
    assert report["schema"] == "run-report/1" and report["config"] == "P2T1D2" and len(report["iteration_s"]) == 2
    assert [r["rank"] for r in report["ranks"]] == [0, 1, 2, 3]
    categories = {span["category"] for r in report["ranks"] for span in r["spans"]}
    assert categories == {"forward", "backward", "pipeline", "dp_sync", "optimizer", "barrier"}
    assert all(8.5 < loss < 9.5 for loss in report["loss"])  # ln(8192) = 9.01 for random tokens
    assert "P2T1D2 gpipe/ps" in capsys.readouterr().out
    events = json.loads(trace.read_text())["traceEvents"]
    threads = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert threads == {"s0r0", "s0r1", "s1r0", "s1r1"}  # the simulator's stream names
    spans = [e for e in events if e["ph"] == "X"]
    assert len(spans) == sum(len(r["spans"]) for r in report["ranks"])
    assert {e["cat"] for e in spans} == categories


@pytest.mark.parametrize("argv,message", [
    (["run", "missing.json"], "cannot read plan file"),
    (["run", str(EXAMPLE), "--iterations", "0"], "--iterations and --every must be at least 1"),
    (["run", str(EXAMPLE), "--out", "no/such/dir/run.json"], "folder no/such/dir does not exist"),
    (["run", str(EXAMPLE), "--plot", "run.svg"], "name the file .png"),
    (["run"], "the following arguments are required: plan"),
    (["run", str(EXAMPLE), "--resume"], "--resume needs --checkpoint-dir"),
    (["run", str(EXAMPLE), "--backend", "nccl"], "--backend nccl needs CUDA and NCCL; this torch"),
    (["run", str(EXAMPLE), "--checkpoint-dir", "no/such/dir/ck"], "folder no/such/dir does not exist"),
    (["run", str(EXAMPLE), "--every", "0", "--checkpoint-dir", "ck"], "--every must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_tensor_parallel_degree_the_model_does_not_divide_into_is_refused(capsys, tmp_path) -> None:
    from scheduler.layouts import megatron_layout
    from scheduler.plan import load_plan

    plan = load_plan(EXAMPLE)
    odd = replace(plan, model=replace(plan.model, vocab=8194), placement=megatron_layout(4, 4, 1, 4))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(odd.to_json()))
    assert main(["run", str(path), "--quiet"]) == 2
    assert "8 heads, FFN 2048 and vocabulary 8194 must each divide into 4 tensor-parallel shards" in \
        capsys.readouterr().err


@pytest.mark.distributed
def test_sim_validate_puts_a_run_beside_its_prediction(capsys, tmp_path) -> None:
    from executor.machine import cores_here as _cores
    from profiler.cli import main as profiler
    from simulator.cli.main import main as sim

    run, profile = tmp_path / "run.json", tmp_path / "cpu.json"
    threads = max(1, _cores() // 4)  # what each of the 4 ranks gets
    assert profiler(["compute", "--quiet", "--tp", "1", "--micro-batch", "1", "--repeats", "3", "--threads",
                     str(threads), "--dropout", "0", "-o", str(profile)]) == 0
    assert main(["run", str(EXAMPLE), "--iterations", "1", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert sim(["validate", str(EXAMPLE), str(run), "--profile", str(profile), "--engine", "analytic"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    # The 4 ranks ran on this machine's CPU: the prediction shares its cores among them (on a
    # machine with fewer than 4 × threads cores).
    if 4 * threads > _cores():
        assert lines[-1].startswith("compute: ranks 0, 1, 2, 3 share ") and "as the run report says" in lines[-1]
    else:
        assert lines[-1].startswith("compute: every rank on a device of its own")
    assert err == ""  # the profile's threads and dropout are the run's: no warning
    rows = {line.split()[0]: line.split()[1:] for line in lines[4:-1]}
    assert set(rows) == {"iteration", "compute", "tp_comm", "pipeline", "dp_sync", "idle"}
    assert float(rows["iteration"][1]) == pytest.approx(json.loads(run.read_text())["iteration_s"][0], abs=1e-4)
    assert sim(["validate", str(EXAMPLE), str(profile)]) == 2  # a profile is no run report
    assert "expected a run report (run-report/1)" in capsys.readouterr().err


def torchrun(tmp_path, ranks: int, *argv: str):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr",
               "127.0.0.1", "--master-port", str(port), "-m", "executor.cli", "run", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
                          env=dict(os.environ, GLOO_SOCKET_IFNAME="lo"))


@pytest.mark.distributed
def test_under_torchrun_each_process_is_one_rank(tmp_path) -> None:
    out = tmp_path / "run.json"
    done = torchrun(tmp_path, 4, str(EXAMPLE), "--iterations", "1", "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r["rank"] for r in report["ranks"]] == [0, 1, 2, 3] and len(report["iteration_s"]) == 1
    wrong = torchrun(tmp_path, 2, str(EXAMPLE), "--iterations", "1", "--quiet")
    assert wrong.returncode != 0 and "plan P2T1D2 runs 4 ranks; torchrun started 2" in wrong.stderr
