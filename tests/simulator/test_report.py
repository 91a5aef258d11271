"""`sim report`: the same predictions as `sim predict`'s table, written as Markdown, CSV and PNG;
the same bytes on every run, whatever the number of processes; bad input refused before any work
with one line and exit 2, nothing written."""

from __future__ import annotations

import csv
import io

import pytest

from profiler.model import gpt3_xl
from profiler.scenarios import scenario
from simulator.cli.main import main
from simulator.outputs import charts, report
from simulator.prediction import PredictionTable, SystemResult, TableRow
from simulator.study.table import predict_table, scheduler_settings


@pytest.fixture(scope="module")
def universities() -> list[report.CaseReport]:
    """One report shared by the tests that only read it: universities is the quickest case to plan."""
    return report.run_report(["universities"], [24], [1024])


def test_rows_are_predict_tables_rows_with_the_deterministic_scheduler(universities) -> None:
    [case] = universities
    cluster = scenario("universities").build()
    expected = predict_table(cluster, "universities", gpt3_xl, [24], [1024],
                             search=scheduler_settings(cluster, deterministic=True))
    assert case.table.to_json() == expected.to_json()
    assert case.timeline_system == "ours_scheduled"
    assert len(case.timeline.rows) == 64
    assert case.timeline.title.startswith("universities: Ours w/ scheduler (P8T1D8), 24 layers, batch 1024")


def test_pflops_follow_facts() -> None:
    """docs/facts.md §1: 23.64 PFLOP an iteration of 24 layers, batch 1024."""
    assert report.pflops(24, 1024, 10.0) == pytest.approx(2.364, rel=1e-3)
    assert report.pflops(24, 1024, None) is None


def table(*rows: TableRow) -> PredictionTable:
    return PredictionTable(case="toy", engine="analytic", rows=rows)


def test_csv_and_markdown_of_a_small_table() -> None:
    row = TableRow(layers=24, batch=1024,
                   systems={"megatron_optimal": SystemResult(iteration_s=20.0, config="P2T1D32"),
                            "ours_random": SystemResult(iteration_s=None),
                            "ours_scheduled": SystemResult(iteration_s=10.0)},
                   megatron_configs={"P2T1D32": 20.0, "P1T1D64": None})
    case = report.CaseReport(name="toy", summary="a toy", table=table(row), timeline=None, timeline_system=None)
    # P2T1 is not one of the study's four configurations: nothing to compare against
    assert report.study_speedups(case.table) == []
    lines = list(csv.reader(io.StringIO(report.csv_text([case]))))
    assert lines[0] == ["case", "layers", "batch", "system", "config", "iteration_s", "pflop_per_s", "gap"]
    assert lines[1:] == [["toy", "24", "1024", "megatron_optimal", "P2T1D32", "20", "1.18219", ""],
                         ["toy", "24", "1024", "ours_random", "", "", "", ""],
                         ["toy", "24", "1024", "ours_scheduled", "", "10", "2.36439", ""],
                         ["toy", "24", "1024", "megatron_config", "P2T1D32", "20", "1.18219", ""],
                         ["toy", "24", "1024", "megatron_config", "P1T1D64", "", "", ""]]
    text = report.markdown([case])
    assert ("| 24 | 1024 | 20.00 s · 1.18 PF/s (P2T1D32) | OOM | **10.00 s · 2.36 PF/s** |") in text
    assert "| toy | 2.00× | 2.00× | 2.00× | 1 of 1 | - | - |" in text
    assert "![toy timeline]" not in text  # no timeline, no picture
    assert charts.speedups(case.table) == [("24 L, 1024", 2.0)]


def test_the_study_s_configurations_are_its_four() -> None:
    """The study's Megatron-Optimal was the fastest of P8T1, P1T8, P4T2, P2T4 that fit."""
    ours = SystemResult(iteration_s=10.0)
    rows = [TableRow(layers=24, batch=b, systems={"megatron_optimal": SystemResult(iteration_s=5.0, config="P1T1D64"),
                                                  "ours_scheduled": ours},
                     megatron_configs={"P1T1D64": 5.0, "P8T1D8": 12.0, "P4T2D8": t, "P2T4D8": None})
            for b, t in ((1024, 8.0), (2048, 14.0))]
    case = report.CaseReport(name="toy", summary="a toy", table=table(*rows), timeline=None, timeline_system=None)
    assert report.study_speedups(case.table) == [0.8, 1.2]
    assert "| toy | 0.50× | 0.50× | 0.50× | 0 of 2 | 0.80–1.20× | 1 of 2 |" in report.markdown([case])


def test_the_systems_chart_draws_a_bar_per_fitting_result_and_marks_oom() -> None:
    row = TableRow(layers=24, batch=1024,
                   systems={"megatron_pp": SystemResult(iteration_s=30.0, config="P8T1D8"),
                            "megatron_optimal": SystemResult(iteration_s=20.0, config="P2T1D32"),
                            "ours_random": SystemResult(iteration_s=None),
                            "ours_scheduled": SystemResult(iteration_s=10.0)}, megatron_configs={})
    fig, axes = charts.new_figure(6, 3)
    ax = axes[0][0]
    charts.systems_chart(ax, table(row, row))
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == [10.0, 10.0, 20.0, 20.0, 30.0, 30.0]
    assert [t.get_text() for t in ax.texts] == ["OOM", "OOM"]


def read_folder(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_command_writes_the_same_bytes_every_run(tmp_path, capsys) -> None:
    argv = ["report", "--case", "universities", "regional", "--layers", "24", "--batch", "1024", "--quiet"]
    assert main(argv + ["-o", str(tmp_path / "one"), "--jobs", "2"]) == 0
    assert main(argv + ["-o", str(tmp_path / "two"), "--jobs", "1"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("wrote 7 files to ")
    first, second = read_folder(tmp_path / "one"), read_folder(tmp_path / "two")
    assert sorted(first) == ["predictions.csv", "regional-systems.png", "regional-timeline.png", "report.md",
                             "speedup.png", "universities-systems.png", "universities-timeline.png"]
    assert first == second
    text = first["report.md"].decode()
    assert text.index("## universities") < text.index("## regional")  # in the order asked
    assert "![regional timeline](regional-timeline.png)" in text


def test_progress_goes_to_stderr(tmp_path, capsys) -> None:
    assert main(["report", "--case", "3", "--layers", "24", "--batch", "1024", "-o", str(tmp_path / "r"),
                 "--jobs", "1"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0].startswith("[sim report] 1/1 universities: 24 layers, batch 1024")
    assert "timeline of universities" in err and "[sim report]" not in out


@pytest.mark.parametrize("argv,words", [
    (["--case", "mars"], ("mars",)),
    (["--case", "spot", "--jobs", "0"], ("--jobs",)),
    (["--case", "spot", "--layers", "0"], ("--layers",)),
    (["--case", "spot", "--all"], ("not allowed with",)),
    ([], ("one of the arguments",)),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, words) -> None:
    rc = main(["report", *argv, "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_or_has_no_parent_is_refused_before_the_work(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    for target, words in ((blocker, "is not a folder"), (tmp_path / "no" / "such", "does not exist")):
        rc = main(["report", "--all", "-o", str(target), "--quiet"])
        out, err = capsys.readouterr()
        assert rc == 2 and words in err and len(err.splitlines()) == 1
    assert blocker.read_text() == "keep me"


def test_the_committed_example_report_is_what_the_code_predicts(tmp_path, universities) -> None:
    """examples/report/ is `sim report --all -o examples/report`: after a change of the model,
    write it again and review its diff."""
    from pathlib import Path

    committed = Path(__file__).resolve().parents[2] / "examples" / "report"
    report.write_report(universities, tmp_path / "r")
    fresh = (tmp_path / "r" / "predictions.csv").read_text().splitlines()
    lines = (committed / "predictions.csv").read_text().splitlines()
    assert fresh[0] == lines[0]
    assert fresh[1:] == [line for line in lines if line.startswith("universities,24,1024,")]
    table = (tmp_path / "r" / "report.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| 24 | 1024 |"))
    assert row in (committed / "report.md").read_text()
    assert {p.name for p in committed.iterdir()} >= {"report.md", "predictions.csv", "speedup.png"} | {
        f"{case}-{kind}.png" for case in ("ondemand", "spot", "universities", "regional", "world")
        for kind in ("systems", "timeline")}


def test_the_users_matplotlibrc_does_not_change_the_bytes(tmp_path, universities) -> None:
    import matplotlib

    report.write_report(universities, tmp_path / "plain")
    with matplotlib.rc_context({"font.size": 14, "lines.linewidth": 3, "figure.dpi": 50}):
        report.write_report(universities, tmp_path / "styled")
    assert read_folder(tmp_path / "plain") == read_folder(tmp_path / "styled")


def test_a_new_report_replaces_an_earlier_one_whole_and_refuses_a_folder_of_other_files(tmp_path, capsys) -> None:
    out = tmp_path / "r"
    assert main(["report", "--case", "regional", "--layers", "24", "--batch", "1024", "-o", str(out), "--quiet"]) == 0
    assert main(["report", "--case", "universities", "universities", "--layers", "24", "24", "--batch", "1024",
                 "-o", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv", "report.md", "speedup.png",
                                                     "universities-systems.png", "universities-timeline.png"]
    text = (out / "report.md").read_text()
    assert text.count("## universities") == 1 and text.count("| 24 | 1024 |") == 1  # repeats asked once
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # nothing left beside it
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    rc = main(["report", "--case", "spot", "--layers", "24", "--batch", "1024", "-o", str(out), "--quiet"])
    out_text, err = capsys.readouterr()
    assert rc == 2 and "holds files a report does not write (notes.txt)" in err and len(err.splitlines()) == 1
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.md").read_text() == text


def test_settings_no_system_applies_to_are_refused_before_the_work(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(report, "_row", lambda *a: pytest.fail("no setting should be predicted"))
    rc = main(["report", "--case", "spot", "--layers", "24", "3", "--batch", "3", "-o", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert rc == 2 and "batch 3 does not divide over the data-parallel replicas" in err and out == ""
    assert not (tmp_path / "r").exists()


def test_layers_the_study_runtime_cannot_split_leave_its_columns_out(tmp_path, capsys) -> None:
    """20 layers: no 8-stage runtime, so no Ours columns and no speed-up chart; Megatron's
    configurations whose stages divide 20 still run."""
    assert main(["report", "--case", "ondemand", "--layers", "20", "--batch", "1024", "-o", str(tmp_path / "r"),
                 "--quiet", "--jobs", "1"]) == 0
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert names == ["ondemand-systems.png", "ondemand-timeline.png", "predictions.csv", "report.md"]
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| layers | batch | Megatron-Optimal |" in text and "Ours" not in text.split("## ondemand")[1]
