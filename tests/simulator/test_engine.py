"""The SimPy engine against timelines computed by hand."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from profiler.network.routes import Network, Route
from profiler.trace import Category
from simulator.engine.simulate import EngineResult, simulate
from simulator.lowering.program import Op, Program, Stream, Transfer

F = Category.FORWARD
B = Category.BACKWARD
P = Category.PIPELINE


def point_to_point(devices: int, capacity: float, latency_s: float) -> Network:
    """One dedicated resource per ordered device pair."""
    pairs = [(a, b) for a in range(devices) for b in range(devices) if a != b]
    return Network(
        resource_names=tuple(f"link{a}->{b}" for a, b in pairs),
        capacities_bytes_per_s=(capacity,) * len(pairs),
        routes={
            pair: Route(resources=(i,), flow_cap_bytes_per_s=math.inf, latency_s=latency_s)
            for i, pair in enumerate(pairs)
        },
    )


def gpipe(stages: int, micro_batches: int, fwd_s: float, bwd_s: float, size: float) -> Program:
    """GPipe on one replica: a main stream per stage (all forwards, then backwards in reverse),
    plus a send and a receive stream per stage. Op ids are (kind, stage, micro-batch) codes."""

    def oid(kind: int, s: int, m: int) -> int:
        return (kind * 100 + s) * 100 + m

    fwd, bwd, recv_act, recv_grad, send_act, send_grad = range(6)
    act = lambda s, m: oid(0, s, m)  # noqa: E731 - transfer ids: activation s -> s+1
    grad = lambda s, m: oid(1, s, m)  # noqa: E731 - gradient s+1 -> s
    mbs = range(micro_batches)
    back = list(reversed(mbs))
    transfers = [
        Transfer(id=tid(s, m), src_device=a, dst_device=b, size_bytes=size, category=P)
        for s in range(stages - 1)
        for m in mbs
        for tid, a, b in ((act, s, s + 1), (grad, s + 1, s))
    ]
    streams = []
    for s in range(stages):
        first, last = s == 0, s == stages - 1
        main = [Op(id=oid(fwd, s, m), category=F, label=f"F{m}", duration_s=fwd_s,
                   deps=() if first else (oid(recv_act, s, m),)) for m in mbs]
        main += [Op(id=oid(bwd, s, m), category=B, label=f"B{m}", duration_s=bwd_s,
                    deps=(oid(fwd, s, m),) if last else (oid(recv_grad, s, m),)) for m in back]
        sends = [] if last else [Op(id=oid(send_act, s, m), category=P, label=f"send F{m}",
                                    sends=(act(s, m),), deps=(oid(fwd, s, m),)) for m in mbs]
        sends += [] if first else [Op(id=oid(send_grad, s, m), category=P, label=f"send B{m}",
                                      sends=(grad(s - 1, m),), deps=(oid(bwd, s, m),))
                                   for m in back]
        recvs = [] if first else [Op(id=oid(recv_act, s, m), category=P, label=f"recv F{m}",
                                     recvs=(act(s - 1, m),)) for m in mbs]
        recvs += [] if last else [Op(id=oid(recv_grad, s, m), category=P, label=f"recv B{m}",
                                     recvs=(grad(s, m),)) for m in back]
        for name, ops, is_main in ((f"s{s}", main, True), (f"s{s}.send", sends, False),
                                   (f"s{s}.recv", recvs, False)):
            streams.append(Stream(name=name, devices=(s,), main=is_main, ops=tuple(ops)))
    return Program(streams=tuple(streams), transfers=tuple(transfers))


@pytest.mark.parametrize("stages", [2, 3])
def test_gpipe_with_free_transfers_matches_closed_form(stages):
    micro_batches, f, b = 4, 1.0, 2.0
    program = gpipe(stages, micro_batches, f, b, size=1.0)
    result = simulate(program, point_to_point(stages, capacity=1e18, latency_s=0.0))
    assert result.makespan_s == pytest.approx((stages + micro_batches - 1) * (f + b), rel=1e-9)


@pytest.mark.parametrize("stages", [2, 3])
def test_gpipe_latency_adds_one_per_crossing(stages):
    micro_batches, f, b, latency_s = 4, 1.0, 2.0, 0.25
    program = gpipe(stages, micro_batches, f, b, size=1.0)
    result = simulate(program, point_to_point(stages, capacity=1e18, latency_s=latency_s))
    closed_form = (stages + micro_batches - 1) * (f + b) + 2 * (stages - 1) * latency_s
    assert result.makespan_s == pytest.approx(closed_form, rel=1e-9)


def test_gpipe_result_counts_and_stream_ends():
    program = gpipe(2, 4, 1.0, 2.0, size=1.0)
    result = simulate(program, point_to_point(2, capacity=1e18, latency_s=0.0))
    assert result.operations == program.op_count + len(program.transfers) == 24 + 16
    assert result.stream_end_s["s0"] == pytest.approx(15.0, rel=1e-9)
    assert result.stream_end_s["s1"] == pytest.approx(13.0, rel=1e-9)  # 5 f + 4 b
    assert len(result.spans) == program.op_count
    first = result.spans[0]
    assert (first.stream, first.label, first.category, first.main) == ("s0", "F0", F, True)
    assert (first.start_s, first.end_s) == (0.0, 1.0)


def test_record_spans_false_gives_no_spans_and_the_same_times():
    program = gpipe(2, 4, 1.0, 2.0, size=1.0)
    network = point_to_point(2, capacity=1e18, latency_s=0.1)
    with_spans = simulate(program, network)
    without = simulate(program, network, record_spans=False)
    assert without.spans == ()
    assert without.makespan_s == with_spans.makespan_s
    assert without.stream_end_s == with_spans.stream_end_s


def blocking_pair(sender_busy_s: float, receiver_busy_s: float) -> Program:
    """Device 0 computes then sends transfer 7; device 1 computes then receives it, each on a
    single (blocking) stream."""
    return Program(
        streams=(
            Stream(name="a", devices=(0,), main=True, ops=(
                Op(id=1, category=F, label="work a", duration_s=sender_busy_s),
                Op(id=2, category=P, label="send", sends=(7,)),
            )),
            Stream(name="b", devices=(1,), main=True, ops=(
                Op(id=3, category=F, label="work b", duration_s=receiver_busy_s),
                Op(id=4, category=P, label="recv", recvs=(7,)),
            )),
        ),
        transfers=(Transfer(id=7, src_device=0, dst_device=1, size_bytes=40.0, category=P),),
    )


@pytest.mark.parametrize("sender_busy_s, receiver_busy_s", [(1.0, 3.0), (3.0, 1.0)])
def test_blocking_send_recv_rendezvous_at_the_second_post(sender_busy_s, receiver_busy_s):
    # 40 B at 10 B/s plus 0.5 s latency, starting when the later side is posted (t = 3): the send
    # is done when its last byte leaves (t = 7), the receive when it arrives.
    result = simulate(blocking_pair(sender_busy_s, receiver_busy_s),
                      point_to_point(2, capacity=10.0, latency_s=0.5))
    spans = {span.label: span for span in result.spans}
    assert spans["send"].start_s == pytest.approx(sender_busy_s, rel=1e-9)
    assert spans["recv"].start_s == pytest.approx(receiver_busy_s, rel=1e-9)
    assert spans["send"].end_s == pytest.approx(7.0, rel=1e-9)
    assert spans["recv"].end_s == pytest.approx(7.5, rel=1e-9)
    assert result.makespan_s == pytest.approx(7.5, rel=1e-9)


def test_op_waits_for_deps_on_other_streams():
    program = Program(streams=(
        Stream(name="x", devices=(0,), main=True,
               ops=(Op(id=1, category=F, label="long", duration_s=5.0),)),
        Stream(name="y", devices=(0,), main=False, ops=(
            Op(id=2, category=F, label="short", duration_s=1.0),
            Op(id=3, category=B, label="after both", duration_s=2.0, deps=(1, 2)),
        )),
    ))
    result = simulate(program, point_to_point(1, capacity=1.0, latency_s=0.0))
    spans = {span.label: span for span in result.spans}
    assert (spans["after both"].start_s, spans["after both"].end_s) == (5.0, 7.0)
    assert result.stream_end_s == {"x": 5.0, "y": 7.0}


def with_ops(a_ops: tuple[Op, ...], b_ops: tuple[Op, ...], transfer_ids=(7,)) -> Program:
    return Program(
        streams=(Stream(name="a", devices=(0,), main=True, ops=a_ops),
                 Stream(name="b", devices=(1,), main=True, ops=b_ops)),
        transfers=tuple(Transfer(id=t, src_device=0, dst_device=1, size_bytes=1.0, category=P)
                        for t in transfer_ids),
    )


def test_transfer_sent_twice_is_rejected():
    program = with_ops(
        (Op(id=1, category=P, label="send", sends=(7,)),
         Op(id=2, category=P, label="send again", sends=(7,))),
        (Op(id=3, category=P, label="recv", recvs=(7,)),),
    )
    with pytest.raises(ValueError, match="transfer 7 has two send sides"):
        simulate(program, point_to_point(2, 1.0, 0.0))


def test_transfer_without_receive_side_is_rejected():
    program = with_ops((Op(id=1, category=P, label="send", sends=(7,)),), ())
    with pytest.raises(ValueError, match="transfer 7 has no receive side"):
        simulate(program, point_to_point(2, 1.0, 0.0))


def test_unknown_transfer_is_rejected():
    program = with_ops((Op(id=1, category=P, label="send", sends=(8,)),), ())
    with pytest.raises(ValueError, match="unknown transfer 8"):
        simulate(program, point_to_point(2, 1.0, 0.0))


def test_unknown_dep_is_rejected():
    program = with_ops((Op(id=1, category=F, label="f", duration_s=1.0, deps=(99,)),), (),
                       transfer_ids=())
    with pytest.raises(ValueError, match=r"op 1 \('f'\) on stream 'a' depends on unknown op 99"):
        simulate(program, point_to_point(2, 1.0, 0.0))


def test_duplicate_op_id_is_rejected():
    program = with_ops((Op(id=1, category=F, label="f", duration_s=1.0),),
                       (Op(id=1, category=F, label="g", duration_s=1.0),), transfer_ids=())
    with pytest.raises(ValueError, match="op id 1"):
        simulate(program, point_to_point(2, 1.0, 0.0))


def test_both_receiving_first_deadlocks():
    # a: recv 8 then send 7; b: recv 7 then send 8 - neither send is ever posted.
    program = Program(
        streams=(
            Stream(name="a", devices=(0,), main=True, ops=(
                Op(id=1, category=P, label="a recv", recvs=(8,)),
                Op(id=2, category=P, label="a send", sends=(7,)),
            )),
            Stream(name="b", devices=(1,), main=True, ops=(
                Op(id=3, category=P, label="b recv", recvs=(7,)),
                Op(id=4, category=P, label="b send", sends=(8,)),
            )),
        ),
        transfers=(Transfer(id=7, src_device=0, dst_device=1, size_bytes=1.0, category=P),
                   Transfer(id=8, src_device=1, dst_device=0, size_bytes=1.0, category=P)),
    )
    with pytest.raises(RuntimeError, match="deadlock: stream 'a' is stuck at op 1 \\('a recv'\\)"):
        simulate(program, point_to_point(2, 1.0, 0.0))


def test_empty_program():
    result = simulate(Program(streams=()), point_to_point(1, 1.0, 0.0))
    assert result == EngineResult(makespan_s=0.0, stream_end_s={}, spans=(), operations=0)


def test_receives_posted_ahead_stream_back_to_back() -> None:
    """A nonblocking op posts both receives at t = 0; the sender's two sends (4 s each at 10 B/s)
    then leave at 4 and 8 with no gap for the latency, and the consumer of the second waits for
    its arrival (8.5) through ``arrivals``."""
    transfers = tuple(Transfer(id=i, src_device=0, dst_device=1, size_bytes=40.0, category=P) for i in (0, 1))
    program = Program(streams=(
        Stream(name="a", devices=(0,), main=True, ops=(Op(id=1, category=P, label="send 0", sends=(0,)),
                                                          Op(id=2, category=P, label="send 1", sends=(1,)))),
        Stream(name="b", devices=(1,), main=True, ops=(
            Op(id=3, category=P, label="recv both", recvs=(0, 1), nonblocking=True),
            Op(id=4, category=F, label="use 1", duration_s=1.0, arrivals=(1,))))), transfers=transfers)
    result = simulate(program, point_to_point(2, capacity=10.0, latency_s=0.5))
    spans = {span.label: span for span in result.spans}
    assert (spans["send 0"].end_s, spans["send 1"].end_s) == pytest.approx((4.0, 8.0))
    assert spans["recv both"].start_s == 0.0 and spans["recv both"].end_s == pytest.approx(8.5)
    assert spans["use 1"].start_s == pytest.approx(8.5) and result.makespan_s == pytest.approx(9.5)


def test_a_transfer_with_a_start_up_flows_that_much_later() -> None:
    program = blocking_pair(1.0, 1.0)
    slow = Program(streams=program.streams, transfers=(replace(program.transfers[0], startup_s=2.0),))
    result = simulate(slow, point_to_point(2, capacity=10.0, latency_s=0.5))
    assert result.makespan_s == pytest.approx(1.0 + 2.0 + 4.0 + 0.5)


def test_a_nonblocking_op_only_receives() -> None:
    program = Program(streams=(Stream(name="a", devices=(0,), main=True, ops=(
        Op(id=1, category=P, label="bad", sends=(0,), nonblocking=True),)),
        Stream(name="b", devices=(1,), main=True, ops=(Op(id=2, category=P, label="recv", recvs=(0,)),))),
        transfers=(Transfer(id=0, src_device=0, dst_device=1, size_bytes=1.0, category=P),))
    with pytest.raises(ValueError, match="nonblocking"):
        simulate(program, point_to_point(2, capacity=10.0, latency_s=0.0))
