"""Spans of time on a device's streams, predicted (the SimPy engine's) or measured (an executor
run's), what each was spent on, and the Chrome trace-event JSON (chrome://tracing, Perfetto) both
are written as.

One process per device (the first device of each stream), one thread per stream, one complete
("X") event per span. Output order is fully determined by the spans' contents, so the same
simulation always writes the same file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from profiler.cluster import Cluster
from profiler.files import write_atomic


class Category(StrEnum):
    """What a span of time was spent on; the prediction's breakdown uses these."""

    FORWARD = "forward"
    BACKWARD = "backward"  # includes the recompute that precedes it
    OPTIMIZER = "optimizer"
    TP_COMM = "tp_comm"  # tensor-parallel all-reduces inside layers (blocking)
    PIPELINE = "pipeline"  # activation / activation-gradient transfers between stages
    DP_SYNC = "dp_sync"  # data-parallel gradient synchronisation
    BARRIER = "barrier"  # the study's runtime waiting in a barrier across all ranks (idle time)


COMPUTE_CATEGORIES = (Category.FORWARD, Category.BACKWARD, Category.OPTIMIZER)


@dataclass(frozen=True, slots=True, kw_only=True)
class Span:
    """An op's time on its stream: from when it began (comm ops: were posted) to when it ended;
    the engine's record of a simulated op, and the executor's of a measured one."""

    stream: str
    devices: tuple[int, ...]
    main: bool
    op_id: int
    label: str
    category: Category
    start_s: float
    end_s: float


_US_PER_S = 1e6  # trace-event timestamps and durations are in microseconds


def chrome_trace(
    spans: Iterable[Span], *, device_names: dict[int, str] | None = None
) -> dict[str, object]:
    """The trace-event object: ``{"traceEvents": [...], "displayTimeUnit": "ms"}``."""
    spans = list(spans)
    names = device_names or {}
    threads = _thread_ids(spans)
    events: list[dict[str, object]] = []
    for pid in sorted({pid for pid, _ in threads.values()}):
        name = names.get(pid, f"device {pid}")
        events.append(_metadata("process_name", pid, 0, name))
        events.append(_metadata("process_sort_index", pid, 0, pid, key="sort_index"))
    for stream, (pid, tid) in sorted(threads.items(), key=lambda item: item[1]):
        events.append(_metadata("thread_name", pid, tid, stream))
        events.append(_metadata("thread_sort_index", pid, tid, tid, key="sort_index"))
    ordered = sorted(
        spans, key=lambda s: (threads[s.stream], s.start_s, s.end_s, s.op_id)
    )
    for span in ordered:
        pid, tid = threads[span.stream]
        events.append(
            {
                "name": span.label,
                "cat": str(span.category),
                "ph": "X",
                "ts": span.start_s * _US_PER_S,
                "dur": (span.end_s - span.start_s) * _US_PER_S,
                "pid": pid,
                "tid": tid,
                "args": {"op_id": span.op_id, "devices": list(span.devices)},
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_chrome_trace(path: str | os.PathLike[str], trace: dict[str, object]) -> None:
    """Write ``trace`` as JSON atomically: readers see the old file or the whole new one."""
    write_atomic(path, json.dumps(trace))


def write_cluster_trace(path: str | os.PathLike[str], spans: Iterable[Span], cluster: Cluster,
                        suffix: str = "") -> None:
    """``spans`` as a trace whose processes are ``cluster``'s devices, each named with its host
    and region, then ``suffix`` (the executor's ", measured")."""
    regions = {host.name: host.region for host in cluster.hosts}
    names = {d.id: f"device {d.id} ({d.host}, {regions[d.host]}){suffix}" for d in cluster.devices}
    write_chrome_trace(path, chrome_trace(spans, device_names=names))


def _thread_ids(spans: list[Span]) -> dict[str, tuple[int, int]]:
    """Stream name -> (pid, tid). Within a device the main stream comes first, then by name;
    tids are numbered 1.. across the whole trace so each is unique."""
    pids: dict[str, tuple[int, bool]] = {}
    for span in spans:
        if not span.devices:
            raise ValueError(f"stream {span.stream!r} has no devices to place it in the trace")
        pids.setdefault(span.stream, (span.devices[0], span.main))
    order = sorted(pids, key=lambda stream: (pids[stream][0], not pids[stream][1], stream))
    return {stream: (pids[stream][0], tid) for tid, stream in enumerate(order, start=1)}


def _metadata(
    name: str, pid: int, tid: int, value: object, *, key: str = "name"
) -> dict[str, object]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": {key: value}}
