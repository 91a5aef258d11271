"""notebooks/what_if.ipynb: committed without outputs, runs top to bottom headless, and the
values it computes are the packages' own, physically ordered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "what_if.ipynb"


def test_the_notebook_is_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    """The notebook run in a folder of its own: it finds the examples through the package."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    elsewhere = tmp_path_factory.mktemp("cwd")
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(elsewhere)}}).execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:60]
    [cell] = [c for c in notebook.cells if "summary" in c.metadata.get("tags", [])]
    text = "".join(o.text for o in cell.outputs if o.output_type == "stream")
    images = sum("image/png" in o.get("data", {}) for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    return {**json.loads(text), "images": images}


@pytest.mark.slow
def test_the_notebook_runs_and_draws(summary) -> None:
    assert summary["images"] == 3  # the sweeps, the timelines side by side, overlaid


@pytest.mark.slow
def test_its_values_are_the_packages(summary) -> None:
    from profiler.scenarios import world
    from simulator.study import whatif

    expected = {k: p.iteration_s for k, p in whatif.systems(world()).items()}
    assert summary["baseline"] == expected
    for sweep in ("bandwidth", "latency"):
        assert summary[sweep]["1"] == expected
    assert summary["regions"]["8"] == expected and summary["a100s"]["0"] == expected


@pytest.mark.slow
def test_its_values_move_the_way_the_physics_says(summary) -> None:
    def series(sweep: str, system: str) -> list[float]:
        return [v[system] for _, v in sorted(summary[sweep].items(), key=lambda item: float(item[0]))]

    for system in ("megatron_optimal", "ours_random", "ours_scheduled"):
        faster = series("bandwidth", system)
        assert all(b <= a * (1 + 1e-9) for a, b in zip(faster, faster[1:])), system
        longer = series("latency", system)
        assert all(b >= a for a, b in zip(longer, longer[1:])), system
        upgraded = series("a100s", system)
        assert all(b <= a * (1 + 1e-9) for a, b in zip(upgraded, upgraded[1:])), system
    for sweep in ("bandwidth", "latency", "regions", "a100s"):
        for values in summary[sweep].values():
            assert values["ours_scheduled"] <= values["ours_random"] * (1 + 1e-9)


@pytest.mark.slow
def test_its_timeline_is_sim_validates_prediction_of_the_example_run(summary) -> None:
    from profiler.profile import load_profile
    from profiler.run_report import load_run_report
    from scheduler.plan import load_plan
    from simulator.cost.job import Job
    from simulator.outputs.validate import measured, run_units
    from simulator.predict import predict

    plan = load_plan(ROOT / "examples" / "cpu-two-regions-plan.json")
    report = load_run_report(ROOT / "examples" / "cpu-two-regions-run.json")
    job = Job(cluster=plan.cluster, model=plan.model, training=plan.training,
              profiles=(load_profile(ROOT / "profiles" / "cpu-gpt-small-fp32.json"),),
              units=run_units(report, plan.cluster, "run"))
    prediction, _ = predict(job, plan.placement, engine="simpy")
    assert summary["timeline"]["predicted_s"] == pytest.approx(prediction.iteration_s, rel=1e-12)
    assert summary["timeline"]["measured_s"] == measured(report)[0]
    assert summary["timeline"]["rows"] == 4
