"""The development set: 147 figures the study's authors measured on V100 clusters other than the
five cases (simulator/study/data/study-runs.json, from their public experiment notes), each predicted
by the simulator and held against what was measured (`sim fidelity`).

Every series becomes clusters and plans the simulator runs (docs/fidelity.md says why each
choice):
- the tc settings are one region of single-V100 p3.2xlarge hosts whose links have that delay and
  rate ("default": no tc, the data center's 0.1 ms and the NIC's 10 Gbit/s);
- the study's runtime: 8 stages × D pipelines in its rank order (rank r·8 + s is stage s of
  pipeline r, one instance each), GPipe, its central (NCCL reduce + broadcast) or sharded
  server; one round of the series' per-pipeline batch where the notes say "no gradient
  accumulation", else its 2 rounds of 64 (homogeneous-64); the fp32 master weights offloaded
  where the notes say so and in the runs of the runtime's default, not in dp-sync-scaling, whose
  batch of 96 is the largest the notes call fitting without the offload;
- Megatron: its default rank layout of PxTyDz over the instance list;
- single transfers: one transfer of 64 or 128 MiB between two instances over fresh connections
  (TCP slow start), with gloo's one connection or NCCL's sixteen.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.model import TrainingSpec, gpt3_xl
from profiler.network.tcp import TRANSPORTS, slow_start_s
from profiler.network.topology import Topology, route_rates
from profiler.scenarios import DATACENTER_LATENCY_S, MS, geo, ondemand
from profiler.trace import Category
from scheduler.layouts import blocks_layout, megatron_layout
from scheduler.placement import Placement, Sync
from simulator.cost.job import Job
from simulator.lowering.program import Op, Program, Stream, Transfer
from simulator.outputs.render import align
from simulator.predict import predict

DATA = Path(__file__).parent / "data" / "study-runs.json"
RUNS_SCHEMA = "study-runs/1"
FIDELITY_SCHEMA = "fidelity/1"
NIC_GBIT = 10  # a p3.2xlarge's NIC: "up to 10 Gbit/s" (docs/facts.md §2); what no tc rate sets
MIB = 2**20
STAGES = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    series: str
    setting: str  # the network: "default" or the tc setting
    column: str
    measured_s: float
    predicted_s: float | None  # None: the simulator finds it does not fit in memory

    @property
    def error(self) -> float:
        """(predicted − measured) / measured; a run the simulator calls out of memory is 100% off."""
        return 1.0 if self.predicted_s is None else (self.predicted_s - self.measured_s) / self.measured_s

    def to_json(self) -> dict:
        return {"series": self.series, "setting": self.setting, "column": self.column, "measured_s": self.measured_s,
                "predicted_s": self.predicted_s, "error": self.error}


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    series: str
    setting: str
    column: str
    seconds: float


def load_runs(path: Path = DATA) -> list[Measured]:
    """Every figure of the development set, in file order, in seconds."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("schema") != RUNS_SCHEMA:
        raise InputError(f"{path}: schema is {doc.get('schema')!r}, expected {RUNS_SCHEMA!r}")
    out = []
    for series in doc["series"]:
        scale = 1e-3 if "ms" in series else 1.0
        for setting, columns in (series.get("seconds") or series["ms"]).items():
            out += [Measured(series=series["id"], setting=setting, column=column, seconds=value * scale)
                    for column, value in columns.items()]
    return out


def network(setting: str) -> tuple[float, float]:
    """(one-way latency s, rate Gbit/s) of a tc setting's name: "default", "10ms", "5Gbps",
    "10ms-1Gbps"; an unset part is the data center's (0.1 ms) or the NIC's (10 Gbit/s)."""
    if setting == "default":
        return DATACENTER_LATENCY_S, NIC_GBIT
    match = re.fullmatch(r"(?:(\d+)ms)?-?(?:(\d+)Gbps)?", setting)
    if not match or not any(match.groups()):
        raise InputError(f"unknown tc setting {setting!r}")
    delay, rate = match.groups()
    return (int(delay) * MS if delay else DATACENTER_LATENCY_S), (int(rate) if rate else NIC_GBIT)


def instances(count: int, setting: str) -> Cluster:
    """``count`` p3.2xlarge (one V100 each) in one region, every pair shaped by ``setting``."""
    latency, gbit = network(setting)
    return geo(f"p3.2xlarge-{count}-{setting}", {"aws": count}, (latency / MS, gbit), {})


def study_plan(pipelines: int, layers: int, sync: Sync) -> Placement:
    """The study's runtime on 8 × ``pipelines`` instances in its rank order: device r·8 + s is
    stage s of pipeline r (comm/comm_utils.py)."""
    order = [r * STAGES + s for s in range(STAGES) for r in range(pipelines)]
    return replace(blocks_layout(order, layers, STAGES, pipelines), sync=sync)


def _study(setting: str, pipelines: int, layers: int, per_pipeline: int, sync: Sync = Sync.PS,
           rounds: int | None = 1, offload: bool | None = None) -> tuple[Job, Placement]:
    training = TrainingSpec(global_batch=per_pipeline * pipelines, rounds=rounds, offload=offload)
    job = Job(cluster=instances(STAGES * pipelines, setting), model=gpt3_xl(layers), training=training)
    return job, study_plan(pipelines, layers, sync)


def _dp_sync(setting: str, column: str) -> tuple[Job, Placement]:
    if column == "single":
        return _study(setting, 1, 24, 96, offload=False)
    kind, pipelines = column.split("-")
    return _study(setting, int(pipelines), 24, 96, Sync.SHARDED if kind == "sharded" else Sync.PS, offload=False)


def _megatron(cluster: Cluster, column: str) -> tuple[Job, Placement]:
    match = re.fullmatch(r"L(\d+) P(\d+)T(\d+)D(\d+)", column)
    layers, pp, tp = int(match.group(1)), int(match.group(2)), int(match.group(3))
    job = Job(cluster=cluster, model=gpt3_xl(layers), training=TrainingSpec(global_batch=1024))
    return job, megatron_layout(cluster.size, layers, pp, tp)


PLANS: dict[str, Callable[[str, str], tuple[Job, Placement]]] = {
    "dp-sync-scaling": _dp_sync,
    "pipeline-batch": lambda setting, column: _study(setting, 1, 24, int(column)),
    "pipeline-layers": lambda setting, column: _study(setting, 1, STAGES * int(column), 64),
    "homogeneous-64": lambda setting, column: _study(setting, 8, STAGES * int(column), 128, rounds=None),
    "megatron-64-p3.2xlarge": lambda setting, column: _megatron(instances(64, setting), column),
    "megatron-8-p3.16xlarge-seed": lambda setting, column: _megatron(ondemand(), column),
}


def transfer_program(setting: str, column: str) -> tuple[Program, Topology]:
    """A single transfer ("gloo 64MB": 64 MiB over gloo) between two instances on fresh
    connections: the program of one send and one receive, and its network."""
    library, size = column.split()
    transport = TRANSPORTS[library]
    topology = Topology(instances(2, setting), transport)
    size_bytes = float(size.removesuffix("MB")) * MIB
    route = topology.route(0, 1)
    rate = route_rates([route], topology.capacities)[0]
    startup = slow_start_s(size_bytes, rate, 2 * route.latency_s, transport.connections)
    transfer = Transfer(id=0, src_device=0, dst_device=1, size_bytes=size_bytes, category=Category.PIPELINE,
                        startup_s=startup)
    send = Op(id=0, category=Category.PIPELINE, label="send", sends=(0,))
    recv = Op(id=1, category=Category.PIPELINE, label="recv", recvs=(0,))
    streams = (Stream(name="sender", devices=(0,), main=True, ops=(send,)),
               Stream(name="receiver", devices=(1,), main=True, ops=(recv,)))
    return Program(streams=streams, transfers=(transfer,)), topology


def _transfer_s(setting: str, column: str, engine: str) -> float:
    program, topology = transfer_program(setting, column)
    transfer = program.transfers[0]
    if engine == "simpy":
        from simulator.engine.simulate import simulate  # SimPy is only needed here

        return simulate(program, topology.network([(0, 1)]), record_spans=False).makespan_s
    route = topology.route(0, 1)
    rate = route_rates([route], topology.capacities)[0]
    return route.latency_s + transfer.startup_s + transfer.size_bytes / rate


def predict_figure(measured: Measured, engine: str = "analytic") -> Figure:
    if measured.series == "p2p-transfer":
        seconds = _transfer_s(measured.setting, measured.column, engine)
    elif measured.series in PLANS:
        job, placement = PLANS[measured.series](measured.setting, measured.column)
        prediction, _ = predict(job, placement, engine=engine)
        seconds = None if prediction is None else prediction.iteration_s
    else:
        raise InputError(f"no plan for the development set's series {measured.series!r}")
    return Figure(series=measured.series, setting=measured.setting, column=measured.column,
                  measured_s=measured.seconds, predicted_s=seconds)


def evaluate(engine: str = "analytic", series: list[str] | None = None,
             progress: Callable[[str], None] | None = None) -> list[Figure]:
    """Every figure of the development set (or of ``series``), predicted with ``engine``."""
    runs = load_runs()
    known = list(dict.fromkeys(m.series for m in runs))
    for name in series or ():
        if name not in known:
            raise InputError(f"unknown series {name!r} (known: {', '.join(known)})")
    chosen = [m for m in runs if not series or m.series in series]
    figures = []
    for name in dict.fromkeys(m.series for m in chosen):
        if progress:
            progress(f"{name}: {sum(m.series == name for m in chosen)} figures")
        figures += [predict_figure(m, engine) for m in chosen if m.series == name]
    return figures


def mape(figures: list[Figure]) -> float:
    """Mean absolute percentage error, as a fraction."""
    return sum(abs(f.error) for f in figures) / len(figures)


def by_series(figures: list[Figure]) -> dict[str, list[Figure]]:
    out: dict[str, list[Figure]] = {}
    for f in figures:
        out.setdefault(f.series, []).append(f)
    return out


def to_json(figures: list[Figure], engine: str) -> dict:
    return {"schema": FIDELITY_SCHEMA, "engine": engine, "mape": mape(figures), "count": len(figures),
            "series": {name: {"mape": mape(group), "count": len(group)} for name, group in by_series(figures).items()},
            "figures": [f.to_json() for f in figures]}


def render(figures: list[Figure], engine: str) -> str:
    """Measured, predicted and error per figure; the MAPE per series; last, the whole set's."""
    rows = [["series", "setting", "figure", "measured s", "predicted s", "error"]]
    for f in figures:
        rows.append([f.series, f.setting, f.column, f"{f.measured_s:.3f}",
                     "OOM" if f.predicted_s is None else f"{f.predicted_s:.3f}", f"{100 * f.error:+.1f}%"])
    summary = [["series", "figures", "MAPE"]] + [[name, str(len(group)), f"{100 * mape(group):.1f}%"]
                                                 for name, group in by_series(figures).items()]
    return (f"development set (simulator/study/data/study-runs.json), {engine} engine\n\n{align(rows, left=3)}\n\n"
            f"{align(summary, left=1)}\n\nfidelity: MAPE {100 * mape(figures):.1f}% over {len(figures)} figures")


def fidelity_chart(ax, figures: list[Figure]) -> None:
    """Predicted against measured, one colour per series, on log axes, with the ±10% band."""
    groups = by_series(figures)
    fitting = [f for f in figures if f.predicted_s is not None]
    low = min(min(f.measured_s, f.predicted_s) for f in fitting) / 1.5
    high = max(max(f.measured_s, f.predicted_s) for f in fitting) * 1.5
    ax.fill_between([low, high], [low / 1.1, high / 1.1], [low * 1.1, high * 1.1], color="#e8e8e8", label="±10%")
    ax.plot([low, high], [low, high], color="#808080", linewidth=0.8)
    for name, group in groups.items():
        points = [f for f in group if f.predicted_s is not None]
        ax.scatter([f.measured_s for f in points], [f.predicted_s for f in points], s=14,
                   label=f"{name} ({100 * mape(group):.1f}%)")
    ax.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high), xlabel="measured seconds",
           ylabel="predicted seconds", title=f"development set: MAPE {100 * mape(figures):.1f}% over {len(figures)} figures")
    ax.legend(fontsize=7, loc="upper left")
