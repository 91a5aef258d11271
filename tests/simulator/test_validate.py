"""sim validate: the measured breakdown of a run report, the comparison, and bad reports."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from profiler.errors import InputError
from profiler.run_report import RunReport
from scheduler.plan import load_plan
from simulator.cost.sharing import CPU_BUSY_SHARE, LOOPBACK_COPY_CORES, Unit, cpu_unit
from simulator.outputs.validate import check_report, compare, measured, run_units

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


HEAD = {"schema": "run-report/1", "config": "P1T1D2", "schedule": "1f1b", "sync": "allreduce"}


def report(schedule: str) -> RunReport:
    spans = [
        [("forward", 0.0, 0.2), ("pipeline", 0.2, 0.5), ("backward", 0.5, 0.9), ("dp_sync", 0.9, 1.0)],
        [("pipeline", 0.0, 0.2), ("forward", 0.2, 0.4), ("backward", 0.4, 0.8), ("optimizer", 0.8, 0.9)],
    ]
    return RunReport.from_json(HEAD | {"schedule": schedule, "iteration_s": [1.1, 0.9], "ranks": [
        {"rank": r, "spans": [{"category": c, "start_s": a, "end_s": b} for c, a, b in rank]}
        for r, rank in enumerate(spans)]})


def test_the_measured_breakdown_is_the_mean_over_ranks_and_idle_the_rest() -> None:
    iteration, parts = measured(report("1f1b"))
    assert iteration == pytest.approx(1.0)
    assert parts["compute_s"] == pytest.approx((0.6 + 0.7) / 2) and parts["pipeline_s"] == pytest.approx(0.25)
    assert parts["dp_sync_s"] == pytest.approx(0.05) and parts["idle_s"] == pytest.approx((0.0 + 0.1) / 2)
    assert sum(parts.values()) == pytest.approx(iteration)


def test_with_gpipe_waiting_for_an_input_is_idle_as_the_simulator_counts_it() -> None:
    _, parts = measured(report("gpipe"))
    assert parts["pipeline_s"] == 0.0 and parts["idle_s"] == pytest.approx((0.3 + 0.3) / 2)


def test_rows_give_the_error_against_the_measurement() -> None:
    rows = compare(1.1, {"compute_s": 0.65, "pipeline_s": 0.25, "dp_sync_s": 0.1, "idle_s": 0.1}, measured(report("1f1b")))
    assert [r.part for r in rows] == ["iteration", "compute", "tp_comm", "pipeline", "dp_sync", "idle"]
    assert rows[0].error == pytest.approx(0.1) and rows[2].error is None and rows[4].error == pytest.approx(1.0)


@pytest.mark.parametrize("doc,message", [
    ({"schema": "plan/1"}, "expected a run report"),
    (HEAD | {"iteration_s": [1.0, float("nan")], "ranks": [{"rank": 0, "spans": []}]},
     r"iteration_s\[1\] is nan, not a positive number"),
    (HEAD | {"iteration_s": [0.0], "ranks": [{"rank": 0, "spans": []}]}, "not a positive number"),
    (HEAD | {"iteration_s": [1.0], "ranks": [{"rank": 0, "spans": [{"category": "forward", "start_s": 0.5,
                                                                         "end_s": 0.2}]}]},
     r"ranks\[0\] spans\[0\]: ends at 0.2 s, before it starts at 0.5 s"),
    (HEAD | {"iteration_s": [1.0], "ranks": [{"rank": 0, "spans": [{"category": "forward", "start_s": 0,
                                                                         "end_s": float("inf")}]}]},
     "must be finite seconds"),
    (HEAD | {"iteration_s": [1.0]}, "malformed run report"),
    (HEAD | {"iteration_s": [], "ranks": []}, "no iterations or no ranks"),
    (HEAD | {"iteration_s": [1.0], "ranks": [{"rank": 0, "spans": [{"category": "lunch", "start_s": 0,
                                                                         "end_s": 1}]}]}, "unknown span category"),
])
def test_bad_reports_are_one_line_errors(doc, message) -> None:
    with pytest.raises(InputError, match=message):
        RunReport.from_json(doc, "run.json")


def test_a_report_reads_back_as_it_was_written() -> None:
    run = RunReport.from_json(example_run())
    assert RunReport.from_json(run.to_json()) == run
    assert run.mean_iteration_s == pytest.approx(sum(example_run()["iteration_s"]) / 4)


def example_run() -> dict:
    return json.loads((EXAMPLES / "cpu-two-regions-run.json").read_text())


def test_the_example_run_is_of_its_plan() -> None:
    check_report(RunReport.from_json(example_run()), load_plan(EXAMPLES / "cpu-two-regions-plan.json"), "run.json")


def test_a_run_of_another_plan_is_refused() -> None:
    # Same config, schedule, sync and ranks: only the fingerprint tells the two plans apart.
    other = load_plan(EXAMPLES / "cpu-two-regions-random-plan.json")
    with pytest.raises(InputError, match="run.json: the run report is of another plan"):
        check_report(RunReport.from_json(example_run()), other, "run.json")
    older = {k: v for k, v in example_run().items() if k != "plan_fingerprint"}
    with pytest.raises(InputError, match="no plan_fingerprint: it is from an older executor"):
        check_report(RunReport.from_json(older), other, "run.json")


def _edit_ranks(edit):
    def apply(report: dict) -> dict:
        report["ranks"] = edit(report["ranks"])
        return report
    return apply


@pytest.mark.parametrize("edit,message", [
    (_edit_ranks(lambda ranks: ranks[:3]), "lacks rank 3 of the plan's 4"),
    (_edit_ranks(lambda ranks: ranks[:3] + [dict(ranks[3], rank=0)]), "rank 0 appears more than once"),
    (_edit_ranks(lambda ranks: ranks[:3] + [dict(ranks[3], rank=4)]), "rank 4 is not a device of the plan"),
    (_edit_ranks(lambda ranks: ranks[:3] + [dict(ranks[3], rank=True)]), "rank True is not a whole number"),
    (_edit_ranks(lambda ranks: ranks[:3] + [dict(ranks[3], stage=0)]), "rank 3 ran stage 0 replica 0; the plan "
                                                                       "puts it in stage 1 replica 0"),
    (lambda report: dict(report, config="P4T1D1"), "the run's config is 'P4T1D1', the plan's 'P2T1D2'"),
    (lambda report: dict(report, schedule="1f1b"), "the run's schedule is '1f1b'"),
    (lambda report: dict(report, sync="allreduce"), "the run's sync is 'allreduce'"),
])
def test_a_report_that_does_not_match_its_plan_is_refused(edit, message) -> None:
    plan = load_plan(EXAMPLES / "cpu-two-regions-plan.json")
    with pytest.raises(InputError, match=message):
        check_report(RunReport.from_json(edit(copy.deepcopy(example_run())), "run.json"), plan, "run.json")


def run_units_of(document: dict, cluster, where: str):
    return run_units(RunReport.from_json(document), cluster, where)


def test_the_ranks_of_one_machine_share_its_cores_whatever_hosts_the_plan_names(cpu_cluster) -> None:
    # The plan spreads 4 ranks over 2 emulated hosts; the run put all 4 on one 2-core machine.
    ranks = [{"rank": r, "host": "vm", "cpus": 2, "threads": 1, "spans": []} for r in range(4)]
    doc = HEAD | {"iteration_s": [1.0], "ranks": ranks}
    # Its loopback: the emulated hosts' interconnect (each side of a copy takes half its cores).
    assert run_units_of(doc, cpu_cluster(4, hosts=2, cores=None), "run.json") == (
        Unit(name="vm:cpu", capacity=2 * CPU_BUSY_SHARE, devices=(0, 1, 2, 3), copy_bytes_per_s=1e10,
             copy_ranks=LOOPBACK_COPY_CORES / 2),)
    # Two threads each: one rank at full speed at once.
    assert run_units_of(doc | {"ranks": [dict(r, threads=2) for r in ranks]}, cpu_cluster(4, hosts=2, cores=None), "r")[0].capacity == CPU_BUSY_SHARE
    # Two machines of 2 cores, 2 one-thread ranks each: they never wait for a core, but their
    # transfers copy on their machine's; one rank a machine shares nothing.
    assert run_units_of(doc | {"ranks": [dict(r, host=f"m{r['rank'] % 2}") for r in ranks]}, cpu_cluster(4, hosts=2, cores=None), "r") == (
        cpu_unit("m0:cpu", 2, 1, (0, 2), 1e10), cpu_unit("m1:cpu", 2, 1, (1, 3), 1e10))
    assert run_units_of(doc | {"ranks": [dict(r, host=f"m{r['rank']}") for r in ranks]}, cpu_cluster(4, hosts=2, cores=None), "r") == ()
    # An older report that does not say where its ranks ran: the plan's cluster decides.
    assert run_units_of(doc | {"ranks": [{"rank": r, "spans": []} for r in range(4)]}, cpu_cluster(4, hosts=2, cores=None), "r") is None
    with pytest.raises(InputError, match="rank 7 is not a device of the plan's cluster"):
        run_units_of(doc | {"ranks": ranks + [dict(ranks[0], rank=7)]}, cpu_cluster(4, hosts=2, cores=None), "run.json")


def test_a_profile_measured_under_other_conditions_than_the_run_is_pointed_out() -> None:
    from dataclasses import replace

    from profiler.model import gpt_small
    from profiler.profile import Measured, Profile, Timing

    model = gpt_small()
    t = Timing(median_s=0.01, spread_s=0.0)
    part = Measured(tp=1, micro_batch=1, forward=t, backward=t, recompute=t, peak_memory_bytes=1)
    profile = Profile(device_kind="CPU", device_name="cpu", memory_bytes=1e9, torch_version="2.13.0", threads=1,
                      dtype="fp32", host="h", date="2026-11-27", warmup=1, repeats=1,
                      shape={k: getattr(model, k) for k in ("d_model", "heads", "ffn", "seq_len", "vocab")},
                      layers=(part,), embedding=(part,), head=(part,), optimizer_s_per_param_byte=1e-10, dropout=0.0)
    run = RunReport.from_json(HEAD | {"iteration_s": [1.0], "ranks": [{"rank": 0, "threads": 1, "spans": []}],
                                      "environment": {"dropout": 0.0}})
    from simulator.outputs.validate import profile_warnings

    assert profile_warnings((profile,), run) == []
    warned = profile_warnings((replace(profile, threads=2, dropout=0.1),), run)
    assert len(warned) == 2 and "--threads as the run" in warned[0] and "--dropout 0" in warned[1]
    with pytest.raises(InputError, match=r"run.json: ranks\[0\]: threads must be a whole number"):
        RunReport.from_json(HEAD | {"iteration_s": [1.0], "ranks": [{"rank": 0, "threads": [1], "spans": []}]}, "run.json")
