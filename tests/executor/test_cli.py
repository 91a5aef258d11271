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
    out = tmp_path / "run.json"
    assert main(["run", str(EXAMPLE), "--iterations", "2", "--quiet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "run-report/1" and report["config"] == "P2T1D2" and len(report["iteration_s"]) == 2
    assert [r["rank"] for r in report["ranks"]] == [0, 1, 2, 3]
    categories = {span["category"] for r in report["ranks"] for span in r["spans"]}
    assert categories == {"forward", "backward", "pipeline", "dp_sync", "optimizer"}
    assert all(8.5 < loss < 9.5 for loss in report["loss"])  # ln(8192) = 9.01 for random tokens
    assert "P2T1D2 gpipe/ps" in capsys.readouterr().out


def plan_with(tmp_path, **placement_changes) -> Path:
    from scheduler.plan import load_plan

    plan = load_plan(EXAMPLE)
    plan = replace(plan, placement=replace(plan.placement, **placement_changes))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_json()))
    return path


@pytest.mark.parametrize("argv,message", [
    (["run", "missing.json"], "cannot read plan file"),
    (["run", str(EXAMPLE), "--iterations", "0"], "--iterations must be at least 1"),
    (["run", str(EXAMPLE), "--out", "no/such/dir/run.json"], "folder no/such/dir does not exist"),
    (["run"], "the following arguments are required: plan"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_what_the_executor_does_not_run_yet_is_refused(capsys, tmp_path) -> None:
    from scheduler.placement import Sync

    assert main(["run", str(plan_with(tmp_path, sync=Sync.SHARDED)), "--quiet"]) == 2
    assert "the executor runs 'ps' and 'ring' sync" in capsys.readouterr().err
