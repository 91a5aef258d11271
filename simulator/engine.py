"""Executes a ``Program`` (simulator.program) on SimPy with a fluid flow network.

One SimPy process per stream runs its ops in order. An op first waits for each of its deps (one
yield per unfinished dep, which is cheaper than an AllOf and ends at the same time); a compute op
then waits ``duration_s``; a comm op posts its send and receive sides and waits until every one of
its transfers is delivered. A transfer starts flowing when its second side is posted, so the first
poster waits on an event that the network succeeds on delivery.

Compute on devices that share a unit (simulator.sharing: ranks on one host's cores or one GPU)
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

from simulator.network import FlowNetwork
from simulator.program import Op, Program, Span, Stream, Transfer
from simulator.routes import Network, Route
from simulator.sharing import Unit

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
        self.posted: dict[int, simpy.Event] = {}  # transfer id (one side posted) -> delivery
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
            start_s = env.now
            if op.sends or op.recvs:
                for delivered in self._post(op):
                    yield delivered
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
            if spans is not None:
                spans.append((op, start_s, env.now))
        positions[index] = len(stream.ops)
        self.ends_s[index] = env.now

    def _waiter(self, op_id: int) -> simpy.Event:
        waiter = self.waiters.get(op_id)
        if waiter is None:
            waiter = self.waiters[op_id] = self.env.event()
        return waiter

    def _post(self, op: Op) -> list[simpy.Event]:
        """Post the op's sides; start each transfer whose peer side was already posted."""
        posted = self.posted
        events = []
        for transfer_id in op.sends + op.recvs:
            delivered = posted.pop(transfer_id, None)
            if delivered is None:
                delivered = posted[transfer_id] = self.env.event()
            else:
                transfer = self.transfers[transfer_id]
                copy = self.copies.get(transfer_id)
                if copy is None:
                    self.network.start(transfer.src_device, transfer.dst_device, transfer.size_bytes,
                                       delivered=delivered)
                else:
                    src, dst = transfer.src_device, transfer.dst_device
                    parts = self.env.all_of([self.network.start(src, dst, transfer.size_bytes),
                                           self.compute.start(src, dst, copy), self.compute.start(dst, src, copy)])
                    parts.callbacks.append(lambda _, done=delivered: done.succeed())  # delivered once all are
            events.append(delivered)
        return events

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
