"""Executes a ``Program`` (simulator.lowering.program) on SimPy with a fluid flow network.

One SimPy process per stream runs its ops in order. An op first waits for each of its deps and
arrivals (one yield per unfinished one, which is cheaper than an AllOf and ends at the same time);
a compute op then waits ``duration_s``; a comm op posts its send and receive sides and waits until
each send's last byte has left and each receive is delivered (a nonblocking op does not wait). A
transfer starts flowing when its second side is posted (``startup_s`` later where it has one), so
a side posted first waits on an event that the network succeeds later.

Compute on devices that share a unit (simulator.cost.sharing: ranks on one host's cores or one GPU)
runs as flows through a second fluid network whose resources are the units, one flow per rank
(a tensor-parallel worker's op is done when each of its ranks is): a flow's size is the op's
duration, its cap full speed, so n ranks computing on a unit of capacity c each run at min(1, c / n).
A transfer between two ranks of a CPU unit also copies on it: two more flows on the unit, its
sender's side and its receiver's (keyed by the pair, each way), each capped at the capacity a side
keeps busy at full speed; the transfer is delivered when its network flow and both sides are done.

Op completion events are made lazily, only for ops that somebody is actually waiting on: most ops
are awaited by no one but their own stream, and an event nobody waits for still costs a trip
through SimPy's queue.
"""

from __future__ import annotations

import gc
from collections.abc import Generator
from dataclasses import dataclass

import simpy

from profiler.network.routes import Network, Route
from profiler.trace import Span
from simulator.cost.sharing import Unit
from simulator.engine.flows import FlowNetwork
from simulator.lowering.program import Op, Program, Stream, Transfer

# Compute flows carry work in nanoseconds at full speed, so the network's round-off guards (which
# think in bytes) stay far below any op worth modelling.
_WORK_PER_S = 1e9


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineResult:
    makespan_s: float  # when the last op finished
    stream_end_s: dict[str, float]  # when each stream's last op finished (0 for an empty one)
    spans: tuple[Span, ...]  # grouped by stream in program order, ops in stream order
    operations: int  # modelled operations: ops plus transfers


def simulate(program: Program, network: Network, *, record_spans: bool = True,
             units: tuple[Unit, ...] = ()) -> EngineResult:
    """Run ``program`` to completion; ``units`` are the compute units devices share.

    Raises ValueError for a malformed program (see ``validate_program``) and RuntimeError if it
    deadlocks (some op can never start or finish).
    """
    transfers = validate_program(program, network)
    # A run allocates hundreds of thousands of long-lived objects (events, spans), which makes
    # CPython's cyclic collector rescan them over and over (measured on the GPipe benchmark with
    # spans: 1.26 s with it, 1.02 s without). Nothing here relies on cycle collection: pause it.
    collecting = gc.isenabled()
    gc.disable()
    try:
        run = _Run(program, network, transfers, record_spans, units)
        run.env.run()
        run.raise_if_stuck()
        return run.result()
    finally:
        if collecting:
            gc.enable()


def validate_program(program: Program, network: Network) -> dict[int, Transfer]:
    """Check ids, transfer sides, deps and routes; return the transfers by id."""
    transfers = _transfers_by_id(program, network)
    op_ids = _check_ops(program)
    senders: dict[int, tuple[Stream, Op]] = {}
    receivers: dict[int, tuple[Stream, Op]] = {}
    for stream in program.streams:
        for op in stream.ops:
            if op.nonblocking and (op.sends or not op.recvs):
                raise ValueError(f"{_where(stream, op)} is nonblocking: it may only post receives")
            for transfer_id in op.arrivals:
                if transfer_id not in transfers:
                    raise ValueError(f"{_where(stream, op)} waits for the arrival of unknown transfer {transfer_id}")
            if op.sends:
                _claim_sides(op.sends, "send", stream, op, transfers, senders)
            if op.recvs:
                _claim_sides(op.recvs, "receive", stream, op, transfers, receivers)
            for dep in op.deps:
                if dep not in op_ids:
                    raise ValueError(f"{_where(stream, op)} depends on unknown op {dep}")
    for transfer_id in transfers:
        if transfer_id not in senders:
            raise ValueError(f"transfer {transfer_id} has no send side")
        if transfer_id not in receivers:
            raise ValueError(f"transfer {transfer_id} has no receive side")
    return transfers


def _transfers_by_id(program: Program, network: Network) -> dict[int, Transfer]:
    transfers: dict[int, Transfer] = {}
    for transfer in program.transfers:
        if transfer.id in transfers:
            raise ValueError(f"transfer id {transfer.id} is used twice")
        if (transfer.src_device, transfer.dst_device) not in network.routes:
            raise ValueError(
                f"transfer {transfer.id}: no route from device {transfer.src_device} "
                f"to device {transfer.dst_device}"
            )
        if not transfer.size_bytes >= 0:
            raise ValueError(f"transfer {transfer.id} has size {transfer.size_bytes} bytes")
        if not transfer.startup_s >= 0:
            raise ValueError(f"transfer {transfer.id} has start-up {transfer.startup_s} s")
        transfers[transfer.id] = transfer
    return transfers


def _check_ops(program: Program) -> set[int]:
    """Unique stream names and op ids, sane durations; returns the op ids."""
    names: set[str] = set()
    op_ids: set[int] = set()
    for stream in program.streams:
        if stream.name in names:
            raise ValueError(f"stream name {stream.name!r} is used twice")
        names.add(stream.name)
        for op in stream.ops:
            if op.id in op_ids:
                raise ValueError(f"op id {op.id} ({op.label!r}) is used twice")
            op_ids.add(op.id)
            if not op.duration_s >= 0:
                raise ValueError(f"op {op.id} ({op.label!r}) has duration {op.duration_s} s")
            if op.is_comm and op.duration_s:
                raise ValueError(
                    f"comm op {op.id} ({op.label!r}) has duration {op.duration_s} s; its time "
                    "comes from its transfers"
                )
    return op_ids


def _where(stream: Stream, op: Op) -> str:
    return f"op {op.id} ({op.label!r}) on stream {stream.name!r}"


def _claim_sides(
    transfer_ids: tuple[int, ...],
    side: str,
    stream: Stream,
    op: Op,
    transfers: dict[int, Transfer],
    claimed: dict[int, tuple[Stream, Op]],
) -> None:
    for transfer_id in transfer_ids:
        if transfer_id not in transfers:
            raise ValueError(
                f"{_where(stream, op)} posts the {side} side of unknown transfer {transfer_id}"
            )
        if transfer_id in claimed:
            raise ValueError(
                f"transfer {transfer_id} has two {side} sides: "
                f"{_where(*claimed[transfer_id])} and {_where(stream, op)}"
            )
        claimed[transfer_id] = (stream, op)


def _copying(units: tuple[Unit, ...]) -> dict[tuple[int, int], int]:
    """(src, dst) -> the index of the CPU unit whose cores a transfer between them copies on."""
    return {(src, dst): index for index, unit in enumerate(units) if unit.copy_s(1.0) > 0
            for src in unit.devices for dst in unit.devices if src != dst}


def _compute_network(units: tuple[Unit, ...], copying: dict[tuple[int, int], int]) -> Network:
    """The units as resources, and a route (keyed by the device, to itself) through its unit for
    every device on one: each rank computes as a flow of its own, capped at full speed; and for
    every pair in ``copying``, the route of their transfers' copies."""
    routes = {(device, device): Route(resources=(index,), flow_cap_bytes_per_s=_WORK_PER_S, latency_s=0.0)
              for index, unit in enumerate(units) for device in unit.devices}
    routes.update((pair, Route(resources=(index,), flow_cap_bytes_per_s=units[index].copy_ranks * _WORK_PER_S,
                               latency_s=0.0)) for pair, index in copying.items())
    return Network(resource_names=tuple(unit.name for unit in units),
                   capacities_bytes_per_s=tuple(unit.capacity * _WORK_PER_S for unit in units), routes=routes)


class _Run:
    """The state of one simulation: environment, network, and who waits for what."""

    __slots__ = (
        "env",
        "program",
        "network",
        "transfers",
        "finished",
        "waiters",
        "posted",
        "delivered",
        "left",
        "positions",
        "ends_s",
        "raw_spans",
        "compute",
        "copies",
    )

    def __init__(
        self,
        program: Program,
        network: Network,
        transfers: dict[int, Transfer],
        record_spans: bool,
        units: tuple[Unit, ...] = (),
    ):
        self.env = simpy.Environment()
        self.program = program
        self.network = FlowNetwork(self.env, network)
        self.transfers = transfers
        self.finished: set[int] = set()  # ids of finished ops
        self.waiters: dict[int, simpy.Event] = {}  # op id -> event succeeded when it finishes
        self.posted: set[int] = set()  # transfers one side of which has been posted
        self.delivered: dict[int, simpy.Event] = {}  # transfer id -> its delivery (made when first needed)
        self.left: dict[int, simpy.Event] = {}  # transfer id -> its last byte leaving the sender
        self.positions = [0] * len(program.streams)  # index of each stream's current op
        self.ends_s = [0.0] * len(program.streams)
        self.raw_spans: list[list[tuple[Op, float, float]]] | None = (
            [[] for _ in program.streams] if record_spans else None
        )
        copying = _copying(units)
        self.compute = FlowNetwork(self.env, _compute_network(units, copying)) if units else None
        on_units = {device for unit in units for device in unit.devices}
        # transfer id -> the work of each of its sides' copies
        self.copies = {}
        for t in transfers.values():
            unit = units[copying[t.src_device, t.dst_device]] if (t.src_device, t.dst_device) in copying else None
            if unit is not None and t.size_bytes > 0:
                self.copies[t.id] = unit.copy_s(t.size_bytes) * unit.copy_ranks * _WORK_PER_S
        for index, stream in enumerate(program.streams):
            shared = tuple(d for d in stream.devices if d in on_units)
            self.env.process(self._stream(index, stream, shared, len(shared) < len(stream.devices)))

    def _stream(self, index: int, stream: Stream, shared: tuple[int, ...],
                own: bool) -> Generator[simpy.Event, object, None]:
        """The process of one stream: its ops strictly in order. The stream's ranks on ``shared``
        devices compute through their units' network, one flow each; with ``own`` devices (on no
        unit) beside them, those take the op's duration; the op ends when all have."""
        env = self.env
        finished = self.finished
        waiters = self.waiters
        positions = self.positions
        spans = self.raw_spans[index] if self.raw_spans is not None else None
        for position, op in enumerate(stream.ops):
            positions[index] = position
            for dep in op.deps:
                if dep not in finished:
                    yield self._waiter(dep)
            for transfer_id in op.arrivals:
                arrived = self._event(self.delivered, transfer_id)
                if not arrived.processed:
                    yield arrived
            start_s = env.now
            record = spans is not None
            if op.sends or op.recvs:
                sides = self._post(op)
                if not op.nonblocking:
                    for side in sides:
                        yield side
                elif record:  # its span ends when its receives are delivered
                    self._record_later(spans, op, start_s, sides)
                    record = False
            elif op.duration_s > 0:
                if not shared:
                    yield env.timeout(op.duration_s)
                else:
                    ranks = [self.compute.start(d, d, op.duration_s * _WORK_PER_S) for d in shared]
                    if own:
                        ranks.append(env.timeout(op.duration_s))
                    for done in ranks:
                        yield done
            finished.add(op.id)
            waiter = waiters.pop(op.id, None)
            if waiter is not None:
                waiter.succeed()
            if record:
                spans.append((op, start_s, env.now))
        positions[index] = len(stream.ops)
        self.ends_s[index] = env.now

    def _waiter(self, op_id: int) -> simpy.Event:
        waiter = self.waiters.get(op_id)
        if waiter is None:
            waiter = self.waiters[op_id] = self.env.event()
        return waiter

    def _event(self, events: dict[int, simpy.Event], transfer_id: int) -> simpy.Event:
        event = events.get(transfer_id)
        if event is None:
            event = events[transfer_id] = self.env.event()
        return event

    def _record_later(self, spans: list, op: Op, start_s: float, sides: list[simpy.Event]) -> None:
        """A nonblocking op's span, from its post to its last delivery, in its place in the stream."""
        slot = len(spans)
        spans.append((op, start_s, start_s))
        done = self.env.all_of(sides)
        done.callbacks.append(lambda _, slot=slot: spans.__setitem__(slot, (op, start_s, self.env.now)))

    def _post(self, op: Op) -> list[simpy.Event]:
        """Post the op's sides; start each transfer whose peer side was already posted. The events
        each side waits for: a send its last byte leaving, a receive its delivery."""
        posted = self.posted
        events = [self._event(self.left, t) for t in op.sends] + [self._event(self.delivered, t) for t in op.recvs]
        for transfer_id in op.sends + op.recvs:
            if transfer_id not in posted:
                posted.add(transfer_id)
                continue
            posted.discard(transfer_id)
            transfer = self.transfers[transfer_id]
            if transfer.startup_s > 0:
                self.env.timeout(transfer.startup_s).callbacks.append(lambda _, t=transfer: self._start(t))
            else:
                self._start(transfer)
        return events

    def _start(self, transfer: Transfer) -> None:
        """The transfer's bytes start to flow; between two ranks of a CPU unit both sides also copy
        on its cores, and the transfer has left once the sender's copy is done too and is
        delivered once both copies are."""
        delivered, left = self._event(self.delivered, transfer.id), self._event(self.left, transfer.id)
        src, dst, size = transfer.src_device, transfer.dst_device, transfer.size_bytes
        copy = self.copies.get(transfer.id)
        if copy is None:
            self.network.start(src, dst, size, delivered=delivered, left=left)
            return
        net_left = self.env.event()
        net_delivered = self.network.start(src, dst, size, left=net_left)
        sent, received = self.compute.start(src, dst, copy), self.compute.start(dst, src, copy)
        self.env.all_of([net_left, sent]).callbacks.append(lambda _: left.succeed())
        self.env.all_of([net_delivered, sent, received]).callbacks.append(lambda _: delivered.succeed())

    def raise_if_stuck(self) -> None:
        for index, stream in enumerate(self.program.streams):
            position = self.positions[index]
            if position < len(stream.ops):
                op = stream.ops[position]
                stuck = sum(
                    p < len(s.ops) for p, s in zip(self.positions, self.program.streams)
                )
                raise RuntimeError(
                    f"deadlock: stream {stream.name!r} is stuck at op {op.id} ({op.label!r}) "
                    f"at t={self.env.now} s; {stuck} streams unfinished"
                )

    def result(self) -> EngineResult:
        streams = self.program.streams
        return EngineResult(
            makespan_s=max(self.ends_s, default=0.0),
            stream_end_s={stream.name: end for stream, end in zip(streams, self.ends_s)},
            spans=self._spans(),
            operations=self.program.op_count + len(self.transfers),
        )

    def _spans(self) -> tuple[Span, ...]:
        if self.raw_spans is None:
            return ()
        spans = []
        for stream, raw in zip(self.program.streams, self.raw_spans):
            name, devices, main = stream.name, stream.devices, stream.main
            spans.extend(
                Span(
                    stream=name,
                    devices=devices,
                    main=main,
                    op_id=op.id,
                    label=op.label,
                    category=op.category,
                    start_s=start_s,
                    end_s=end_s,
                )
                for op, start_s, end_s in raw
            )
        return tuple(spans)
