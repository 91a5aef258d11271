"""The Gantt renderer: predicted spans and measured run reports become the same rows and bars,
idle is exactly what a main stream leaves empty, and the figures are drawn and saved the same
way every time."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.errors import InputError
from profiler.files import read_json
from profiler.run_report import RunReport, load_run_report
from profiler.scenarios import geo
from profiler.trace import Category, Span
from scheduler.layouts import blocks_layout, megatron_layout
from scheduler.plan import load_plan
from simulator.outputs import charts, timeline

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "examples" / "cpu-two-regions-run.json"
PLAN = ROOT / "examples" / "cpu-two-regions-plan.json"


def span(stream: str, devices: tuple[int, ...], category: Category, label: str, start: float, end: float,
         main: bool = True) -> Span:
    return Span(stream=stream, devices=devices, main=main, op_id=0, label=label, category=category,
                start_s=start, end_s=end)


def two_stages():
    """Devices 0, 1 in "far", 2, 3 in "near"; stage 0 = devices 2, 0, stage 1 = devices 3, 1."""
    cluster = geo("two", {"far": 2, "near": 2}, (1, 5), {("far", "near"): (40, 0.3)})
    return cluster, blocks_layout([2, 0, 3, 1], 4, 2, 2)


def test_tensor_parallel_comm_is_no_span_of_its_own() -> None:
    with pytest.raises(ValueError, match="no bar kind"):
        timeline.kind_of(Category.TP_COMM, "all-reduce")


@pytest.mark.parametrize("category,label,kind", [
    (Category.FORWARD, "F0", "forward"), (Category.BACKWARD, "B3", "backward"),
    (Category.OPTIMIZER, "optimizer", "optimizer"), (Category.DP_SYNC, "ps push", "sync"),
    (Category.PIPELINE, "send F1", "send"), (Category.PIPELINE, "recv B0", "receive"),
    (Category.PIPELINE, "send F1 recv B0", "receive"), (Category.PIPELINE, "sends complete", "send"),
    (Category.PIPELINE, "recv activation 2", "receive")])
def test_kinds(category, label, kind) -> None:
    assert timeline.kind_of(category, label) == kind


def test_a_small_predicted_timeline_exactly() -> None:
    cluster, placement = two_stages()
    spans = [span("s0r0", (2,), Category.FORWARD, "F0", 0.0, 1.0),
             span("s0r0/send", (2,), Category.PIPELINE, "send F0", 1.0, 1.5, main=False),
             span("s1r0/recv", (3,), Category.PIPELINE, "recv F0", 0.0, 1.5, main=False),
             span("s1r0", (3,), Category.FORWARD, "F0", 1.5, 2.0),
             span("s1r0", (3,), Category.DP_SYNC, "ps push", 2.5, 3.0),
             span("s0r1", (0,), Category.OPTIMIZER, "optimizer", 0.5, 0.75)]
    t = timeline.predicted(spans, cluster, placement, "tiny")
    # rows: regions in the cluster's order (far, near), then stage, replica
    assert [(r.device, r.region, r.stage, r.replica) for r in t.rows] == [
        (0, "far", 0, 1), (1, "far", 1, 1), (2, "near", 0, 0), (3, "near", 1, 0)]
    assert t.end_s == 3.0
    idle = sorted((b.device, b.start_s, b.end_s) for b in t.bars if b.kind == "idle")
    assert idle == [(0, 0.0, 0.5), (0, 0.75, 3.0), (1, 0.0, 3.0), (2, 1.0, 3.0), (3, 0.0, 1.5), (3, 2.0, 2.5)]
    sides = sorted((b.device, b.kind) for b in t.bars if b.side)
    assert sides == [(2, "send"), (3, "receive")]
    assert t.busy_s("forward") == 1.5 and t.busy_s("sync") == 0.5 and t.busy_s("send") == 0.0
    # every device's main lane covers [0, end] exactly once
    for row in t.rows:
        lane = sorted((b.start_s, b.end_s) for b in t.bars if b.device == row.device and not b.side)
        assert lane[0][0] == 0.0 and lane[-1][1] == 3.0
        assert all(a[1] == b[0] for a, b in zip(lane, lane[1:]))


def test_a_tensor_parallel_stream_draws_on_each_of_its_devices() -> None:
    from profiler.model import TrainingSpec, gpt3_xl
    from profiler.scenarios import ondemand
    from simulator.cost.job import Job
    from simulator.predict import predict
    from simulator.study.systems import megatron_placements

    cluster = geo("one", {"here": 4}, (1, 5), {})
    placement = megatron_layout(4, 2, 2, 2)  # P2T2D1: stage 0 on devices 0, 1; stage 1 on 2, 3
    t = timeline.predicted([span("s0r0", (0, 1), Category.FORWARD, "F0", 0.0, 1.0),
                            span("s1r0", (2, 3), Category.FORWARD, "F0", 1.0, 2.0)], cluster, placement, "tp")
    assert sorted(b.device for b in t.bars if b.kind == "forward") == [0, 1, 2, 3]
    assert [(r.device, r.stage) for r in t.rows] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    # a real one: Megatron's P2T8D4 on 64 V100s, 1F1B, its exchanges on the main stream
    big, job_placement = ondemand(), megatron_placements(64, 8)["P2T8D4"]
    job = Job(cluster=big, model=gpt3_xl(8), training=TrainingSpec(global_batch=16))
    prediction, spans = predict(job, job_placement, engine="simpy", record_spans=True)
    t = timeline.predicted(spans, big, job_placement, "P2T8D4")
    assert len(t.rows) == 64 and t.end_s == pytest.approx(prediction.iteration_s)
    assert not any(b.side for b in t.bars) and {"send", "receive", "sync"} <= {b.kind for b in t.bars}
    with pytest.raises(InputError, match="no spans"):
        timeline.predicted([], cluster, placement, "empty")


def test_a_measured_run_under_gpipe_waits_as_idle_with_strips() -> None:
    plan, report = load_plan(PLAN), load_run_report(RUN)
    t = timeline.measured(report, plan.cluster, plan.placement, "measured")
    assert sorted(r.device for r in t.rows) == [0, 1, 2, 3]
    forward = sum(s.end_s - s.start_s for r in report.ranks for s in r.spans if s.category == "forward")
    assert t.busy_s("forward") == pytest.approx(forward)
    waits = [b for b in t.bars if b.kind == "receive"]
    assert waits and all(b.side for b in waits)  # the executor's GPipe waits: strips, as the simulator draws them
    assert t.end_s == max(s.end_s for r in report.ranks for s in r.spans)


@pytest.mark.parametrize("change,words", [
    (lambda r: r.pop("ranks"), "malformed run report"),
    (lambda r: r["ranks"][0].update(rank=9), "rank 9 is not a device"),
    (lambda r: r["ranks"][0]["spans"][0].update(category="nap"), "unknown span category 'nap'"),
    (lambda r: [rank.update(spans=[]) for rank in r["ranks"]], "no spans to draw")])
def test_bad_reports_are_refused_in_one_line(change, words) -> None:
    plan, report = load_plan(PLAN), read_json(RUN, "run report")
    change(report)
    with pytest.raises(InputError, match=words):
        timeline.measured(RunReport.from_json(report, "run.json"), plan.cluster, plan.placement, "measured",
                          where="run.json")


def test_figures_side_by_side_and_overlaid_and_the_same_bytes_twice(tmp_path) -> None:
    plan, report = load_plan(PLAN), load_run_report(RUN)
    t = timeline.measured(report, plan.cluster, plan.placement, "measured")
    side = timeline.figure(t, t)
    assert len(side.axes) == 2
    assert len(timeline.figure(t, t, overlay=True).axes) == 1
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        charts.save_png(timeline.figure(t), path)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert b"tEXt" not in paths[0].read_bytes() and b"atplotlib" not in paths[0].read_bytes()  # no version inside
    cluster, placement = two_stages()
    other = timeline.predicted([span("s0r0", (2,), Category.FORWARD, "F0", 0.0, 1.0)], cluster, placement, "x")
    with pytest.raises(InputError, match="different devices"):
        timeline.figure(t, other)
    with pytest.raises(ValueError):
        timeline.figure()
