"""Chrome trace export."""

from __future__ import annotations

import json

import pytest

from profiler.trace import Category, Span, chrome_trace, write_chrome_trace


def span(stream: str, device: int, main: bool, op_id: int, start_s: float, end_s: float) -> Span:
    return Span(stream=stream, devices=(device,), main=main, op_id=op_id, label=f"op{op_id}",
                category=Category.FORWARD if main else Category.PIPELINE,
                start_s=start_s, end_s=end_s)


SPANS = (
    span("s1.send", 1, False, 5, 0.5, 0.75),
    span("s1", 1, True, 4, 0.25, 1.5),
    span("s0", 0, True, 2, 1.0, 3.0),
    span("s0", 0, True, 1, 0.0, 1.0),
)


def complete_events(trace: dict) -> list[dict]:
    return [event for event in trace["traceEvents"] if event["ph"] == "X"]


def test_one_complete_event_per_span_in_microseconds():
    trace = chrome_trace(SPANS)
    events = complete_events(trace)
    assert len(events) == len(SPANS)
    by_name = {event["name"]: event for event in events}
    assert by_name["op2"]["ts"] == pytest.approx(1e6)
    assert by_name["op2"]["dur"] == pytest.approx(2e6)
    assert by_name["op5"]["ts"] == pytest.approx(0.5e6)
    assert by_name["op5"]["dur"] == pytest.approx(0.25e6)
    assert by_name["op5"]["cat"] == "pipeline"
    assert by_name["op1"]["pid"] == 0 and by_name["op4"]["pid"] == 1
    assert trace["displayTimeUnit"] == "ms"


def test_threads_are_numbered_per_stream_with_names():
    trace = chrome_trace(SPANS, device_names={0: "gpu0@host-a"})
    metadata = [event for event in trace["traceEvents"] if event["ph"] == "M"]
    threads = {e["args"]["name"]: (e["pid"], e["tid"]) for e in metadata
               if e["name"] == "thread_name"}
    # ordered by device, main stream first: s0 (device 0), s1, s1.send (device 1)
    assert threads == {"s0": (0, 1), "s1": (1, 2), "s1.send": (1, 3)}
    processes = {e["pid"]: e["args"]["name"] for e in metadata if e["name"] == "process_name"}
    assert processes == {0: "gpu0@host-a", 1: "device 1"}
    tids = {event["name"]: event["tid"] for event in complete_events(trace)}
    assert tids == {"op1": 1, "op2": 1, "op4": 2, "op5": 3}


def test_output_is_deterministic_and_json():
    forward = chrome_trace(SPANS)
    backward = chrome_trace(tuple(reversed(SPANS)))
    assert json.dumps(forward) == json.dumps(backward)
    assert [e["name"] for e in complete_events(forward)] == ["op1", "op2", "op4", "op5"]


def test_write_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "trace.json"
    path.write_text("old")
    trace = chrome_trace(SPANS)
    write_chrome_trace(path, trace)
    assert json.loads(path.read_text()) == trace
    assert [p.name for p in tmp_path.iterdir()] == ["trace.json"]  # no temp file left behind


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "trace.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_chrome_trace(path, {"traceEvents": [object()]})
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["trace.json"]


def test_trace_of_a_simulation_has_an_event_per_op():
    from profiler.network.routes import Network, Route
    from simulator.engine.simulate import simulate
    from simulator.lowering.program import Op, Program, Stream, Transfer

    program = Program(
        streams=(
            Stream(name="a", devices=(0,), main=True, ops=(
                Op(id=1, category=Category.FORWARD, label="f", duration_s=0.002),
                Op(id=2, category=Category.PIPELINE, label="send", sends=(9,)),
            )),
            Stream(name="b", devices=(1,), main=True, ops=(
                Op(id=3, category=Category.PIPELINE, label="recv", recvs=(9,)),
            )),
        ),
        transfers=(Transfer(id=9, src_device=0, dst_device=1, size_bytes=1000.0,
                            category=Category.PIPELINE),),
    )
    network = Network(resource_names=("link",), capacities_bytes_per_s=(1e6,),
                      routes={(0, 1): Route(resources=(0,), flow_cap_bytes_per_s=float("inf"),
                                            latency_s=0.0)})
    events = complete_events(chrome_trace(simulate(program, network).spans))
    recv = next(event for event in events if event["name"] == "recv")
    # posted at 0, the transfer starts at 2 ms when the send is posted and takes 1 ms
    assert (recv["ts"], recv["dur"]) == (pytest.approx(0.0), pytest.approx(3000.0))
    assert len(events) == 3
