"""`sim`: its outputs, a golden JSON table, and every bad input ends in exit 2 with one line.

Regenerate the golden file after an intended change of the model:
    TASKLET_REGEN_GOLDEN=1 python -m pytest tests/simulator/test_cli.py -k golden
then review the diff of tests/golden/predict_spot_24_1024.json before committing it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.cluster import load_cluster
from profiler.scenarios import SCENARIOS, universities, world
from simulator.cli.main import main

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "predict_spot_24_1024.json"
PREDICT_SPOT = ["predict", "--case", "spot", "--layers", "24", "--batch", "1024", "--json", "--quiet"]


def sim(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `sim`; a table without --plan-time-limit leaves the scheduled column out (its
    time-limited search is tested on its own below), which keeps these runs short and exact."""
    argv = [str(a) for a in argv]
    if argv[:1] == ["predict"] and "--plan" not in argv and "--plan-time-limit" not in argv:
        argv += ["--plan-time-limit", "0"]
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_bad_input(capsys, *argv: str, words: tuple[str, ...] = ()) -> str:
    rc, out, err = sim(capsys, *argv)
    assert rc == 2, (rc, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sim: error:"), err
    assert "Traceback" not in err and out == ""
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# -- cases ----------------------------------------------------------------------------------
def test_cases_lists_five(capsys) -> None:
    rc, out, err = sim(capsys, "cases")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 5
    for line, item in zip(lines, SCENARIOS.values()):
        assert line.split()[:2] == [str(item.number), item.name]


def test_cases_export_world_to_file(capsys, tmp_path) -> None:
    path = tmp_path / "world.json"
    rc, out, err = sim(capsys, "cases", "--export", "world", "-o", path)
    assert rc == 0 and out == "" and err == ""
    assert load_cluster(path) == world()
    assert json.loads(path.read_text())["schema"] == "cluster/1"
    assert [p.name for p in tmp_path.iterdir()] == ["world.json"]  # no temporary file left behind


def test_cases_export_by_number_to_stdout(capsys) -> None:
    rc, out, _ = sim(capsys, "cases", "--export", "3")
    assert rc == 0
    assert json.loads(out)["name"] == "universities"


def test_exported_cluster_predicts_like_the_case(capsys, tmp_path) -> None:
    path = tmp_path / "spot.json"
    sim(capsys, "cases", "--export", "spot", "-o", path)
    _, by_file, _ = sim(capsys, "predict", "--cluster", path, "--layers", "24", "--batch", "1024", "--json", "--quiet")
    _, by_case, _ = sim(capsys, *PREDICT_SPOT)
    assert json.loads(by_file)["rows"] == json.loads(by_case)["rows"]


# -- predict --json ---------------------------------------------------------------------------
def test_predict_json_is_one_document(capsys) -> None:
    rc, out, err = sim(capsys, *PREDICT_SPOT)
    assert rc == 0 and err == ""
    doc = json.loads(out)  # exactly one document: json.loads rejects trailing data
    assert doc["schema"] == "prediction-table/1"
    assert doc["case"] == "spot" and doc["engine"] == "analytic"
    assert len(doc["rows"]) == 1
    row = doc["rows"][0]
    assert (row["layers"], row["batch"]) == (24, 1024)
    assert row["systems"]["megatron_pp"]["config"] == "P8T1D8"
    assert "P1T8D8" in row["megatron_configs"]
    assert set(row["systems"]) == {"megatron_pp", "megatron_optimal", "ours_random"}


def test_predict_table_with_the_scheduled_plan(capsys) -> None:
    rc, out, _ = sim(capsys, "predict", "--case", "universities", "--layers", "24", "--batch", "1024", "--json",
                     "--quiet", "--plan-time-limit", "4")
    assert rc == 0
    systems = json.loads(out)["rows"][0]["systems"]
    scheduled, random = systems["ours_scheduled"], systems["ours_random"]
    assert scheduled["iteration_s"] < random["iteration_s"]
    assert 0 <= scheduled["gap"] < 1


def test_progress_goes_to_stderr(capsys) -> None:
    rc, out, err = sim(capsys, *PREDICT_SPOT[:-1])
    assert rc == 0
    json.loads(out)
    assert "[sim]" in err and "24 layers" in err


def _same(actual, expected, where: str = "$") -> None:
    """Equal structure and keys; floats to 1e-9 relative."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert list(actual) == list(expected), (where, list(actual), list(expected))
        for key in expected:
            _same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _same(a, e, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert isinstance(actual, (int, float)) and math.isclose(actual, expected, rel_tol=1e-9), \
            (where, actual, expected)
    else:
        assert actual == expected and type(actual) is type(expected), (where, actual, expected)


def test_predict_spot_golden(capsys) -> None:
    rc, out, _ = sim(capsys, *PREDICT_SPOT)
    assert rc == 0
    doc = json.loads(out)
    if os.environ.get("TASKLET_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(doc, indent=2) + "\n")
    assert GOLDEN.exists(), f"{GOLDEN} is missing; regenerate with TASKLET_REGEN_GOLDEN=1"
    _same(doc, json.loads(GOLDEN.read_text()))


# -- predict: the human tables ----------------------------------------------------------------
def data_rows(text: str) -> list[str]:
    """The lines under each table's dashed rule, up to the next blank line."""
    rows, inside = [], False
    for line in text.splitlines():
        if line.startswith("---"):
            inside = True
        elif not line.strip():
            inside = False
        elif inside:
            rows.append(line)
    return rows


def test_human_table(capsys) -> None:
    rc, out, _ = sim(capsys, "predict", "--case", "spot", "--layers", "24", "40", "--batch", "1024", "--quiet")
    assert rc == 0
    assert "Megatron-PP" in out and "Megatron-Optimal" in out and "Ours w/o scheduler" in out
    rows = data_rows(out)
    assert len(rows) == 4  # two rows in each of the two tables
    for row in rows:
        assert "*" in row, row
    assert "OOM" in rows[-1]  # 40 layers: P1T1D64 does not fit


# -- bad input -------------------------------------------------------------------------------
def cluster_file(tmp_path, change=None, text: str | None = None) -> Path:
    path = tmp_path / "cluster.json"
    if text is not None:
        path.write_text(text)
        return path
    doc = copy.deepcopy(universities().to_json())
    if change:
        change(doc)
    path.write_text(json.dumps(doc))
    return path


def test_unknown_case(capsys) -> None:
    assert_bad_input(capsys, "predict", "--case", "mars", words=("mars",))


def test_unknown_case_to_export(capsys, tmp_path) -> None:
    assert_bad_input(capsys, "cases", "--export", "mars", "-o", tmp_path / "x.json", words=("mars",))
    assert not list(tmp_path.iterdir())


def test_output_without_export(capsys, tmp_path) -> None:
    assert_bad_input(capsys, "cases", "-o", tmp_path / "x.json", words=("--export",))


def test_export_to_missing_folder(capsys, tmp_path) -> None:
    assert_bad_input(capsys, "cases", "--export", "world", "-o", tmp_path / "no" / "x.json", words=("does not exist",))


def test_missing_cluster_file(capsys, tmp_path) -> None:
    path = tmp_path / "absent.json"
    assert_bad_input(capsys, "predict", "--cluster", path, words=(str(path),))


def test_malformed_json_cluster(capsys, tmp_path) -> None:
    path = cluster_file(tmp_path, text='{"schema": "cluster/1", ')
    assert_bad_input(capsys, "predict", "--cluster", path, words=(str(path), "JSON"))


def test_inconsistent_cluster(capsys, tmp_path) -> None:
    path = cluster_file(tmp_path, lambda d: d["devices"][9].__setitem__("host", "ghost"))
    assert_bad_input(capsys, "predict", "--cluster", path, words=(str(path), "ghost"))


def test_disconnected_cluster(capsys, tmp_path) -> None:
    def cut(doc):
        doc["links"] = [l for l in doc["links"] if l["regions"][0] == l["regions"][1]]
    path = cluster_file(tmp_path, cut)
    assert_bad_input(capsys, "predict", "--cluster", path, words=(str(path), "disconnected"))


def test_non_positive_bandwidth(capsys, tmp_path) -> None:
    path = cluster_file(tmp_path, lambda d: d["links"][2].__setitem__("bandwidth_bytes_per_s", 0))
    assert_bad_input(capsys, "predict", "--cluster", path, words=(str(path), "bandwidth_bytes_per_s"))


@pytest.mark.parametrize("layers", ["0", "-3"])
def test_non_positive_layers(capsys, layers: str) -> None:
    assert_bad_input(capsys, "predict", "--case", "spot", "--layers", layers, words=("--layers",))


def test_non_positive_batch(capsys) -> None:
    assert_bad_input(capsys, "predict", "--case", "spot", "--batch", "0", words=("--batch",))


@pytest.mark.parametrize(("layers", "stages"), [(7, {1}), (12, {1, 2, 4})])
def test_layers_the_study_runtime_cannot_split(capsys, layers: int, stages: set[int]) -> None:
    """7 or 12 layers do not divide over the study runtime's 8 stages: the row holds Megatron's
    configurations only (P must divide the layers and P·T the 64 devices), no traceback."""
    rc, out, err = sim(capsys, "predict", "--case", "spot", "--layers", layers, "--batch", "1024", "--json", "--quiet")
    assert rc == 0 and err == ""
    (row,) = json.loads(out)["rows"]
    assert "ours_random" not in row["systems"] and "megatron_pp" not in row["systems"]
    expected = {f"P{p}T{t}D{64 // (p * t)}" for p in stages for t in (1, 2, 4, 8)}
    assert set(row["megatron_configs"]) == expected
    assert row["systems"]["megatron_optimal"]["iteration_s"] == min(
        v for v in row["megatron_configs"].values() if v is not None)


def test_layers_the_study_runtime_cannot_split_human_table(capsys) -> None:
    rc, out, _ = sim(capsys, "predict", "--case", "spot", "--layers", "7", "--batch", "1024", "--quiet")
    assert rc == 0
    assert "Megatron-Optimal" in out and "Ours w/o scheduler" not in out


def test_cluster_not_a_multiple_of_eight(capsys, tmp_path) -> None:
    """12 GPUs cannot hold the study's 8-stage runtime: Megatron's configurations only."""
    def shrink(doc):
        doc["devices"] = doc["devices"][:12]
        doc["hosts"] = doc["hosts"][:12]
        regions = {h["region"] for h in doc["hosts"]}  # a link to a region of no host is refused
        doc["links"] = [l for l in doc["links"] if set(l["regions"]) <= regions]
    path = cluster_file(tmp_path, shrink)
    rc, out, _ = sim(capsys, "predict", "--cluster", path, "--layers", "24", "--batch", "1200", "--json", "--quiet")
    assert rc == 0
    (row,) = json.loads(out)["rows"]
    assert "ours_random" not in row["systems"]
    assert "P1T1D12" in row["megatron_configs"] and "P4T1D3" in row["megatron_configs"]


@pytest.mark.parametrize("argv", [["--layers", "24", "7", "--batch", "1024"],
                                  ["--layers", "24", "--batch", "1024", "100"],
                                  ["--layers", "7", "24", "--batch", "1024"]])
def test_rows_with_different_systems(capsys, argv: list[str]) -> None:
    rc, out, _ = sim(capsys, "predict", "--case", "spot", *argv, "--quiet")
    assert rc == 0
    assert "Megatron-PP" in out and "Ours w/o scheduler" in out
    assert len(data_rows(out)) == 4


@pytest.mark.parametrize("argv", [
    ["predict", "--case", "spot", "--bogus"],
    ["predict", "--case", "spot", "--layers", "x"],
    ["predict", "--case", "spot", "--engine", "warp"],
    ["predict"],
    ["predict", "--case", "spot", "--cluster", "c.json"],
    ["frobnicate"],
    [],
    ["cases", "--export"],
])
def test_usage_errors(capsys, argv: list[str]) -> None:
    assert_bad_input(capsys, *argv)


def test_binary_cluster_file(capsys, tmp_path) -> None:
    path = tmp_path / "cluster.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert_bad_input(capsys, "predict", "--cluster", path, words=(str(path),))


def test_links_not_a_list(capsys, tmp_path) -> None:
    path = cluster_file(tmp_path, lambda d: d.__setitem__("links", 5))
    assert_bad_input(capsys, "predict", "--cluster", path, words=(str(path), "links"))


def test_no_traceback_from_a_real_process(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "simulator.cli.main", "predict", "--case", "mars"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("sim: error: unknown case 'mars'") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["cases", "trace"])
def test_output_path_is_a_directory(capsys, tmp_path, command: str) -> None:
    target = tmp_path / "out"
    target.mkdir()
    if command == "cases":
        argv = ["cases", "--export", "world", "-o", target]
    else:
        argv = ["predict", "--case", "spot", "--layers", "24", "--batch", "1024", "--quiet", "--trace", target]
    try:
        rc = main([str(a) for a in argv])
    finally:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary file left behind
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith("sim: error:") and err.count("\n") == 1


def test_no_applicable_configuration_is_not_reported_as_oom(capsys) -> None:
    """2 layers, batch 2 on 64 GPUs: every P1/P2 configuration has 8 or more replicas; nothing ran
    out of memory. Either a one-line error (exit 2) or a table that does not say OOM."""
    rc, out, err = sim(capsys, "predict", "--case", "spot", "--layers", "2", "--batch", "2", "--quiet")
    if rc == 2:
        assert err.startswith("sim: error:") and err.count("\n") == 1
    else:
        assert rc == 0 and "OOM" not in data_rows(out)[0]


# -- sim predict --plan ------------------------------------------------------------------------
def test_predict_plan_json_matches_the_library(capsys, tmp_path) -> None:
    from pathlib import Path

    from scheduler.plan import load_plan
    from simulator.cost.job import Job
    from simulator.predict import predict

    example = Path(__file__).resolve().parents[2] / "examples" / "world-random-plan.json"
    trace = tmp_path / "trace.json"
    rc, out, err = sim(capsys, "predict", "--plan", str(example), "--json", "--trace", str(trace))
    assert rc == 0, err
    doc = json.loads(out)
    plan = load_plan(example)
    expected, _ = predict(Job(cluster=plan.cluster, model=plan.model, training=plan.training), plan.placement,
                          engine="simpy")
    assert doc["schema"] == "prediction/1" and doc["engine"] == "simpy"
    assert doc["iteration_s"] == pytest.approx(expected.iteration_s, rel=1e-12)
    assert json.loads(trace.read_text())["traceEvents"]


def test_predict_plan_that_does_not_fit_is_exit_2(capsys, tmp_path) -> None:
    from profiler.model import TrainingSpec, gpt3_xl
    from profiler.scenarios import spot
    from scheduler.layouts import megatron_layout
    from scheduler.plan import Plan, Provenance

    plan = Plan(cluster=spot(), case="spot", model=gpt3_xl(40), training=TrainingSpec(global_batch=1024),
                placement=megatron_layout(64, 40, 1, 1), provenance=Provenance(method="megatron", objective="time"))
    path = tmp_path / "big.json"
    path.write_text(json.dumps(plan.to_json()))
    rc, out, err = sim(capsys, "predict", "--plan", str(path))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "does not fit in memory: device 0 needs" in err


def test_predict_plan_rejects_table_flags(capsys) -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "world-random-plan.json"
    rc, _, err = sim(capsys, "predict", "--plan", str(example), "--layers", "24")
    assert rc == 2 and "do not apply to --plan" in err


# -- pictures: --plot ----------------------------------------------------------------------------
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PNG = b"\x89PNG\r\n\x1a\n"


def test_trace_of_a_table_whose_fastest_system_is_the_scheduled_plan(capsys, tmp_path) -> None:
    """On world the scheduled plan wins the first row: the trace is of that plan, 64 devices."""
    trace = tmp_path / "trace.json"
    rc, out, err = sim(capsys, "predict", "--case", "world", "--layers", "24", "--batch", "1024", "--quiet",
                       "--plan-time-limit", "1", "--trace", trace)
    assert rc == 0, err
    assert data_rows(out)[0].split()[-1] == "*"  # Ours w/ scheduler, the last column, is the best
    events = json.loads(trace.read_text())["traceEvents"]
    assert len({e["pid"] for e in events if e["ph"] == "X"}) == 64


def test_predict_plots_the_table_and_a_plans_timeline(capsys, tmp_path) -> None:
    bars, gantt = tmp_path / "bars.png", tmp_path / "gantt.png"
    rc, out, err = sim(capsys, "predict", "--case", "spot", "--layers", "24", "--batch", "1024", "2048", "--quiet",
                       "--plot", bars)
    assert rc == 0 and err == "" and bars.read_bytes()[:8] == PNG
    rc, out, err = sim(capsys, "predict", "--plan", EXAMPLES / "world-random-plan.json", "--plot", gantt)
    assert rc == 0 and gantt.read_bytes()[:8] == PNG
    assert out.startswith("plan ")  # the plot comes with the usual text


def test_validate_plots_predicted_beside_measured(capsys, tmp_path) -> None:
    for extra in ([], ["--overlay"]):
        picture = tmp_path / f"v{len(extra)}.png"
        rc, out, err = sim(capsys, "validate", EXAMPLES / "cpu-two-regions-plan.json",
                           EXAMPLES / "cpu-two-regions-run.json", "--profile",
                           EXAMPLES.parent / "profiles" / "cpu-gpt-small-fp32.json", "--plot", picture, *extra)
        assert rc == 0, err
        assert picture.read_bytes()[:8] == PNG and "iteration" in out


@pytest.mark.parametrize("argv,words", [
    (["predict", "--plan", EXAMPLES / "world-random-plan.json", "--engine", "analytic", "--plot", "x.png"],
     ("--plot needs the SimPy engine",)),
    (["predict", "--case", "spot", "--plot", "/no/such/folder/x.png"], ("does not exist",)),
    (["predict", "--case", "spot", "--plot", "x.svg"], ("name the file .png",)),
    (["predict", "--plan", EXAMPLES / "world-random-plan.json", "--plot", "same.png", "--trace", "same.png"],
     ("both name",)),
    (["validate", EXAMPLES / "cpu-two-regions-plan.json", EXAMPLES / "cpu-two-regions-run.json", "--overlay"],
     ("--overlay draws with --plot",)),
    (["validate", EXAMPLES / "cpu-two-regions-plan.json", EXAMPLES / "cpu-two-regions-run.json", "--plot",
      "x.png", "--engine", "analytic"], ("--plot needs the SimPy engine",)),
])
def test_plot_bad_inputs(capsys, argv, words) -> None:
    assert_bad_input(capsys, *argv, words=words)


def test_validate_refuses_a_report_of_other_ranks_before_simulating(capsys, tmp_path, monkeypatch) -> None:
    import simulator.cli.runs

    report = json.loads((EXAMPLES / "cpu-two-regions-run.json").read_text())
    report["ranks"][0]["rank"] = 7
    path = tmp_path / "run.json"
    path.write_text(json.dumps(report))
    monkeypatch.setattr(simulator.cli.runs, "predict", lambda *a, **k: pytest.fail("simulated"))
    assert_bad_input(capsys, "validate", EXAMPLES / "cpu-two-regions-plan.json", path, "--plot",
                     tmp_path / "v.png", words=("rank 7 is not a device",))


def test_validate_refuses_a_run_of_another_plan(capsys) -> None:
    # The random plan has the run's config, schedule, sync and ranks: it used to print a -4.2% error.
    assert_bad_input(capsys, "validate", EXAMPLES / "cpu-two-regions-random-plan.json",
                     EXAMPLES / "cpu-two-regions-run.json", words=("the run report is of another plan",))


def test_plot_into_a_folder_is_refused_before_the_work(capsys, tmp_path) -> None:
    assert_bad_input(capsys, "predict", "--case", "spot", "--plot", tmp_path, words=("is a folder",))


# -- sim plan ------------------------------------------------------------------------------------
def test_plan_writes_a_plan_that_predict_reads(capsys, tmp_path) -> None:
    from scheduler.plan import load_plan

    path = tmp_path / "plan.json"
    random = ["--objective", "comm", "--dp-bytes", "0.65e9", "--pp-bytes", "0.471e9", "--method", "random",
              "--samples", "20", "--seed", "3"]
    rc, out, err = sim(capsys, "plan", "--case", "universities", *random, "-o", str(path))
    assert rc == 0, err
    plan = load_plan(path)
    assert plan.provenance.method == "random" and plan.provenance.seed == 3
    assert f"objective (comm) {plan.provenance.objective_value:.3f}" in out
    assert "replicas by region" in out and "[sim plan] 20/20" in err
    rc, out, err = sim(capsys, "plan", "--case", "universities", *random, "--json", "--quiet")
    again, first = json.loads(out), json.loads(path.read_text())
    again["provenance"].pop("solver_s"), first["provenance"].pop("solver_s")  # wall time differs
    assert rc == 0 and again == first  # same seed, same plan
    assert "objective (comm)" in err
    rc, out, err = sim(capsys, "predict", "--plan", str(path), "--engine", "analytic", "--json")
    assert rc == 0 and json.loads(out)["iteration_s"] == pytest.approx(plan.provenance.predicted_iteration_s)


def test_plan_ilp_comm_reaches_the_study_optimum_with_a_bound(capsys, tmp_path) -> None:
    from scheduler.plan import load_plan

    path = tmp_path / "plan.json"
    rc, out, err = sim(capsys, "plan", "--case", "universities", "--objective", "comm", "--dp-bytes", "0.65e9",
                       "--pp-bytes", "0.471e9", "-o", str(path), "--lp", str(tmp_path / "model.lp"))
    assert rc == 0, err
    prov = load_plan(path).provenance
    assert prov.method == "ilp" and prov.objective_value <= 16.09  # docs/facts.md §5, case 3
    assert prov.lower_bound <= prov.objective_value <= prov.lower_bound * 1.001
    assert "gap 0.0%" in out and "[sim plan] study cost (MILP)" in err
    assert "data_cost_g0_c0" in (tmp_path / "model.lp").read_text()  # named constraints


def test_plan_study_matrices_embed_the_cluster(capsys, tmp_path) -> None:
    path = tmp_path / "plan.json"
    rc, _, err = sim(capsys, "plan", "--case", "regional", "--objective", "comm", "--study-matrices",
                     "--dp-bytes", "0.65e9", "--pp-bytes", "0.471e9", "--gap", "0.01", "--quiet", "-o", str(path))
    doc = json.loads(path.read_text())
    assert rc == 0, err
    assert "case" not in doc["cluster"] and doc["provenance"]["objective_value"] <= 34.80
    assert any(link["latency_s"] == pytest.approx(0.005) for link in doc["cluster"]["links"])


def test_plan_ilp_time_records_servers_and_bound(capsys, tmp_path) -> None:
    from scheduler.plan import load_plan

    path = tmp_path / "plan.json"
    rc, out, err = sim(capsys, "plan", "--case", "world", "--time-limit", "4", "-o", str(path))
    assert rc == 0, err
    plan = load_plan(path)
    prov = plan.provenance
    assert prov.objective == "time" and prov.objective_value == pytest.approx(prov.predicted_iteration_s)
    assert 0 < prov.lower_bound <= prov.objective_value
    assert len(plan.placement.ps_servers) == 8
    assert "iteration bound (MILP)" in err and "lower bound" in out


@pytest.mark.parametrize("argv, words", [
    (["--pp", "7"], "--pp 7"),
    (["--pp", "auto", "--objective", "comm"], "--objective time"),
    (["--micro-batch", "x"], "--micro-batch"),
    (["--pp", "auto", "--dp", "4"], "--dp needs"),
    (["--method", "random", "--samples", "0"], "--samples"),
    (["--batch", "1001"], "does not split"),
    (["--method", "annealing"], "invalid choice"),
    (["--solver", "gurobi"], "invalid choice"),
    (["--time-limit", "0"], "--time-limit"),
    (["--gap", "1.5"], "--gap"),
    (["--method", "random", "--lp", "x.lp"], "--lp"),
    (["--samples", "50"], "--samples applies to --method random"),
    (["--method", "random", "--offspring", "5"], "--offspring applies to --method evolutionary"),
    (["--method", "evolutionary", "--population", "1", "--objective", "comm"], "--population"),
    (["--pp", "0"], "--pp must be at least 1"),
    (["--pp", "8", "--dp", "4"], "--pp 8 × --dp 4"),
    (["--layers", "0"], "--layers must be at least 1"),
    (["--time-limit", "inf"], "argument --time-limit: seconds must be positive and finite, got 'inf'"),
    (["--time-limit", "nan"], "argument --time-limit:"),
    (["--objective", "comm", "--dp-bytes", "inf"], "argument --dp-bytes: bytes must be positive and at most 1e+15"),
    (["--objective", "comm", "--pp-bytes", "1e308"], "argument --pp-bytes: bytes must be positive and at most"),
    (["--objective", "comm", "--pp-bytes", "-1"], "argument --pp-bytes"),
    (["--dp-bytes", "1e9"], "--dp-bytes applies to --objective comm, not time"),
    (["--pp-bytes", "1e9", "--method", "evolutionary"], "--pp-bytes applies to --objective comm"),
])
def test_plan_bad_inputs(capsys, argv, words) -> None:
    rc, out, err = sim(capsys, "plan", "--case", "world", "--quiet", *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and words in err, err


def test_the_largest_cost_bytes_still_solve(capsys) -> None:
    rc, out, err = sim(capsys, "plan", "--case", "universities", "--objective", "comm", "--quiet", "--dp-bytes", "1e15",
                       "--pp-bytes", "1e15", "--json")
    assert rc == 0 and json.loads(out)["provenance"]["objective_value"] > 0, err


@pytest.mark.parametrize("flags, words", [
    (["-o", "/no/such/folder/plan.json"], ("/no/such/folder/plan.json", "does not exist")),
    (["--objective", "comm", "--lp", "/no/such/folder/model.lp"], ("model.lp", "does not exist")),
    (["--objective", "comm", "--lp", "{tmp}"], ("--lp", "is a folder")),
    (["-o", "{tmp}"], ("-o", "is a folder")),
    (["--objective", "comm", "--lp", "{tmp}/same", "-o", "{tmp}/same"], ("-o and --lp both name",)),
])
def test_plan_outputs_are_refused_before_the_solve(capsys, tmp_path, monkeypatch, flags, words) -> None:
    import simulator.cli.plan

    monkeypatch.setattr(simulator.cli.plan, "plan_job", lambda *a, **k: pytest.fail("solved first"))
    monkeypatch.setattr(simulator.cli.plan, "cluster_of", lambda *a, **k: pytest.fail("loaded the cluster first"))
    assert_bad_input(capsys, "plan", "--case", "world", "--quiet", *[f.format(tmp=tmp_path) for f in flags],
                     words=words)


def test_plan_refuses_a_read_only_output_before_the_solve(capsys, tmp_path, monkeypatch) -> None:
    import profiler.flags
    import simulator.cli.plan

    lp = tmp_path / "model.lp"
    lp.write_text("kept\n")
    lp.chmod(0o444)
    # root may write anything: ask os.access as an ordinary user would be answered
    monkeypatch.setattr(profiler.flags.os, "access", lambda path, mode: Path(path) != lp)
    monkeypatch.setattr(simulator.cli.plan, "cluster_of", lambda *a, **k: pytest.fail("loaded the cluster first"))
    assert_bad_input(capsys, "plan", "--case", "world", "--objective", "comm", "--quiet", "--lp", lp,
                     words=("--lp", "read-only"))
    monkeypatch.setattr(profiler.flags.os, "access", lambda path, mode: Path(path) != tmp_path)
    assert_bad_input(capsys, "plan", "--case", "world", "--quiet", "-o", tmp_path / "plan.json",
                     words=("-o", "cannot write into folder"))
    assert lp.read_text() == "kept\n"


def test_plan_writes_the_lp_whole_or_not_at_all(capsys, tmp_path, monkeypatch) -> None:
    import pulp

    lp = tmp_path / "model.lp"
    rc, out, err = sim(capsys, "plan", "--case", "universities", "--objective", "comm", "--quiet", "--lp", lp)
    assert rc == 0 and lp.read_text().startswith("\\* study_comm_cost *\\\nMinimize"), err
    assert [p.name for p in tmp_path.iterdir()] == ["model.lp"]  # no temporary file left beside it

    def fails_halfway(self, filename, *args, **kwargs):
        Path(filename).write_text("\\* half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pulp.LpProblem, "writeLP", fails_halfway)
    lp.write_text("earlier model\n")
    with pytest.raises(OSError):
        sim(capsys, "plan", "--case", "universities", "--objective", "comm", "--quiet", "--lp", lp)
    assert lp.read_text() == "earlier model\n" and [p.name for p in tmp_path.iterdir()] == ["model.lp"]


@pytest.mark.parametrize("value, words", [
    ("nan", ("argument --plan-time-limit:", "'nan'")),
    ("inf", ("argument --plan-time-limit:", "0 (leaves the column out)", "'inf'")),
    ("-1", ("argument --plan-time-limit:",)),
])
def test_predict_refuses_a_time_limit_no_search_can_keep(capsys, value, words) -> None:
    assert_bad_input(capsys, "predict", "--case", "spot", "--plan-time-limit", value, words=words)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds CBC through Linux's /proc")
def test_an_interrupted_cbc_solve_leaves_no_solver_and_no_files(tmp_path) -> None:
    import signal
    import time

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    # spot's comm MILP keeps CBC busy for several seconds.
    child = subprocess.Popen([sys.executable, "-m", "simulator.cli.main", "plan", "--case", "spot", "--objective", "comm",
                              "--solver", "cbc", "--quiet", "--time-limit", "60"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        solver = []
        while not solver and time.monotonic() < deadline and child.poll() is None:
            solver = [c for c in _children(child.pid) if "cbc" in Path(f"/proc/{c}/comm").read_text().lower()]
            time.sleep(0.05)
        assert solver, "CBC never started"
        time.sleep(0.5)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 130 and "sim: interrupted" in err, err
    assert not any(Path(f"/proc/{pid}").exists() for pid in solver), "CBC still running"
    assert list(tmp.iterdir()) == []


def test_study_matrices_need_a_case(capsys, tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(universities().to_json()))
    rc, out, err = sim(capsys, "plan", "--cluster", str(path), "--study-matrices", "--quiet")
    assert rc == 2 and "--study-matrices" in err


def test_plan_without_a_solution_is_exit_1(capsys, monkeypatch) -> None:
    """A solver stopped by its limit before any placement: one line, exit code 1 (not bad input)."""
    import scheduler.ilp

    monkeypatch.setattr(scheduler.ilp, "solve", lambda *args, **kwargs: (False, 0.0))
    rc, out, err = sim(capsys, "plan", "--case", "universities", "--objective", "comm", "--quiet")
    assert rc == 1 and out == "" and err.count("\n") == 1 and "raise --time-limit" in err


def test_plan_chooses_degrees_and_micro_batch(capsys, tmp_path) -> None:
    from scheduler.plan import load_plan

    path = tmp_path / "plan.json"
    rc, out, err = sim(capsys, "plan", "--case", "ondemand", "--pp", "auto", "--micro-batch", "auto",
                       "--time-limit", "24", "-o", str(path))
    assert rc == 0, err
    plan = load_plan(path)
    tried = [line for line in err.splitlines() if "micro-batch" in line and line.startswith("[sim plan] P")]
    assert len(tried) == 12  # pipeline 1, 2, 4, 8 (divisors of 24 layers) × micro-batch 1, 2, 4
    assert plan.placement.pp in (1, 2, 4, 8) and plan.training.micro_batch in (1, 2, 4)
    prov = plan.provenance
    assert prov.lower_bound <= prov.objective_value == pytest.approx(prov.predicted_iteration_s)


def test_show_draws_and_traces_a_run_and_prints_its_parts(capsys, tmp_path) -> None:
    plan, run = EXAMPLES / "cpu-two-regions-plan.json", EXAMPLES / "cpu-two-regions-run.json"
    png, trace = tmp_path / "run.png", tmp_path / "trace.json"
    rc, out, _ = sim(capsys, "show", plan, run, "--plot", png, "--trace", trace)
    report = json.loads(run.read_text())
    mean = sum(report["iteration_s"]) / len(report["iteration_s"])
    assert rc == 0 and f"{mean:.4f} s per iteration (mean of 4)" in out and "dp_sync" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = [e for e in json.loads(trace.read_text())["traceEvents"] if e.get("ph") == "X"]
    assert len(events) == sum(len(rank["spans"]) for rank in report["ranks"])
    assert_bad_input(capsys, "show", EXAMPLES / "cpu-two-regions-random-plan.json", run,
                     words=("the run report is of another plan",))
