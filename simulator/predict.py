"""Predict placements: the memory check first, then the SimPy engine or the analytic estimator."""

from __future__ import annotations

from profiler.errors import InputError
from profiler.network.topology import Topology
from profiler.trace import Category
from scheduler.placement import Placement
from simulator.cost.job import Job
from simulator.cost.memory import memory_report
from simulator.estimator.estimate import estimate
from simulator.lowering.lower import lower
from simulator.lowering.program import Program
from simulator.prediction import BREAKDOWN_KEYS, Prediction


def peak_memory(job: Job, placement: Placement) -> tuple[tuple[float, ...], bool]:
    """Per-device peak bytes (0 for devices the placement leaves idle) and whether all fit."""
    peaks = [0.0] * job.cluster.size
    fits = True
    for item in memory_report(job, placement):
        peaks[item.device] = item.total_bytes
        fits = fits and item.fits
    return tuple(peaks), fits


def check_fits(job: Job, placement: Placement, where: str) -> None:
    """InputError naming the first device that runs out of memory."""
    for item in memory_report(job, placement):
        if not item.fits:
            raise InputError(f"{where}: does not fit in memory: device {item.device} needs "
                             f"{item.total_bytes / 2**30:.2f} GiB of its {item.capacity_bytes / 2**30:.2f} GiB")


def predict(job: Job, placement: Placement, *, engine: str = "simpy", topology: Topology | None = None,
            record_spans: bool = False) -> tuple[Prediction | None, tuple]:
    """(prediction, spans), or (None, ()) when the placement does not fit in memory."""
    if engine not in ("analytic", "simpy"):
        raise ValueError(f"engine must be 'analytic' or 'simpy', got {engine!r}")
    topology = topology or Topology(job.cluster)
    peaks, fits = peak_memory(job, placement)
    if not fits:
        return None, ()
    if engine == "analytic":
        result = estimate(job, topology, placement)
        return Prediction(config=placement.config, engine=engine, iteration_s=result.iteration_s,
                          breakdown=result.breakdown, peak_memory_bytes=peaks), ()
    from simulator.engine.simulate import simulate  # SimPy is only needed here
    program = lower(job, topology, placement)
    network = topology.network((t.src_device, t.dst_device) for t in program.transfers)
    result = simulate(program, network, record_spans=True, units=job.compute_units)
    breakdown = engine_breakdown(program, result.spans, result.makespan_s)
    return (Prediction(config=placement.config, engine=engine, iteration_s=result.makespan_s, breakdown=breakdown,
                       peak_memory_bytes=peaks, operations=result.operations),
            result.spans if record_spans else ())


def engine_breakdown(program: Program, spans, makespan_s: float) -> dict[str, float]:
    """Mean over workers of their main streams' time by category; a worker's sync on a stream of
    its own (the study's runtime) counts where its main stream does nothing else; the rest
    (bubbles, barriers) is idle."""
    ops = {op.id: op for stream in program.streams for op in stream.ops}
    totals = dict.fromkeys(BREAKDOWN_KEYS, 0.0)
    workers = sum(1 for stream in program.streams if stream.main)
    syncing: dict[str, tuple[float, float]] = {}  # worker -> its side stream's sync, first start to last end
    busy: dict[str, list[tuple[float, float]]] = {}  # worker -> its main stream's compute
    for span in spans:
        op, length = ops[span.op_id], span.end_s - span.start_s
        worker = span.stream.split("/")[0]
        if not span.main:
            if op.category is Category.DP_SYNC:
                start, end = syncing.get(worker, (span.start_s, span.end_s))
                syncing[worker] = (min(start, span.start_s), max(end, span.end_s))
        elif op.category is Category.BARRIER:
            continue
        elif op.is_comm:
            totals["dp_sync_s" if op.category is Category.DP_SYNC else "pipeline_s"] += length
        else:
            totals["tp_comm_s"] += op.tp_comm_s
            totals["compute_s"] += length - op.tp_comm_s
            busy.setdefault(worker, []).append((span.start_s, span.end_s))
    for worker, (start, end) in syncing.items():
        overlap = sum(max(0.0, min(end, b) - max(start, a)) for a, b in busy.get(worker, ()))
        totals["dp_sync_s"] += end - start - overlap
    totals["idle_s"] = workers * makespan_s - sum(totals.values())
    return {key: value / workers for key, value in totals.items()}


