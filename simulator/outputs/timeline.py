"""One iteration as a Gantt chart: predicted spans (the SimPy engine's) and measured ones (an
`executor run` report) become the same rows and bars, drawn by one renderer, side by side or
overlaid. Chrome traces (profiler.trace) stay the way to zoom in.

A row is a device, grouped by region, then stage, then replica. Each bar is one kind of time:
forward, backward, optimizer, send, receive, sync, barrier; idle is what a device's main stream
leaves empty. The study's runtime moves its transfers on streams beside the compute: those show as thin
strips at the foot (sends) and head (receives) of their device's row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.run_report import RunReport
from profiler.trace import Category, Span
from scheduler.placement import Placement

KINDS = ("forward", "backward", "optimizer", "send", "receive", "sync", "barrier", "idle")
COLOURS = {"forward": "#4c72b0", "backward": "#55a868", "optimizer": "#8172b2", "send": "#dd8452",
           "receive": "#c44e52", "sync": "#937860", "barrier": "#ccb974", "idle": "#e8e8e8"}
# Tensor-parallel all-reduces are part of the compute ops' spans (Op.tp_comm_s), never spans of their own.
_KIND = {Category.FORWARD: "forward", Category.BACKWARD: "backward", Category.OPTIMIZER: "optimizer",
         Category.DP_SYNC: "sync", Category.BARRIER: "barrier"}


@dataclass(frozen=True, slots=True)
class Row:
    device: int
    region: str
    stage: int
    replica: int

    @property
    def label(self) -> str:
        return f"{self.device} s{self.stage}r{self.replica}"


@dataclass(frozen=True, slots=True)
class Bar:
    device: int
    kind: str
    start_s: float
    end_s: float
    side: bool = False  # on a stream beside the compute (the study's runtime's transfers)


@dataclass(frozen=True, slots=True)
class Timeline:
    title: str
    rows: tuple[Row, ...]  # in drawing order: region, stage, replica, device
    bars: tuple[Bar, ...]  # idle included
    end_s: float

    def busy_s(self, kind: str) -> float:
        """Seconds of ``kind`` summed over devices (main streams only)."""
        return sum(b.end_s - b.start_s for b in self.bars if b.kind == kind and not b.side)


def kind_of(category: Category, label: str) -> str:
    """The bar kind of a span: compute by its category, a pipeline transfer by what its label
    says it waits for (a Megatron "send F3 recv B1" waits for the receive)."""
    if category is Category.PIPELINE:
        return "receive" if "recv" in label else "send"
    if category not in _KIND:
        raise ValueError(f"no bar kind for spans of category {category}")
    return _KIND[category]


def _rows(cluster: Cluster, placement: Placement) -> dict[int, Row]:
    rows = {}
    for s, replicas in enumerate(placement.devices):
        for r, group in enumerate(replicas):
            for d in group:
                rows[d] = Row(device=d, region=cluster.region_of(d), stage=s, replica=r)
    order = {region: i for i, region in enumerate(cluster.regions)}
    return dict(sorted(rows.items(), key=lambda item: (order[item[1].region], item[1].stage, item[1].replica,
                                                        item[0])))


def _with_idle(title: str, rows: dict[int, Row], bars: list[Bar]) -> Timeline:
    end = max((b.end_s for b in bars), default=0.0)
    lanes: dict[int, list[tuple[float, float]]] = {device: [] for device in rows}
    for b in bars:
        if not b.side:
            lanes[b.device].append((b.start_s, b.end_s))
    idle = []
    for device, spans in lanes.items():
        spans.sort()
        at = 0.0
        for start, stop in spans + [(end, end)]:
            if start > at:
                idle.append(Bar(device=device, kind="idle", start_s=at, end_s=start))
            at = max(at, stop)
    return Timeline(title=title, rows=tuple(rows.values()), bars=tuple(bars + idle), end_s=end)


def predicted(spans: Iterable[Span], cluster: Cluster, placement: Placement, title: str) -> Timeline:
    """The engine's spans (simulator.predict.predict(..., record_spans=True)); a stream on
    several devices (a tensor-parallel group) draws on each. The study's runtime syncs on a
    stream of its own: drawn as the row's bar all the same, what the device is doing then."""
    rows = _rows(cluster, placement)
    bars = [Bar(device=d, kind=kind_of(span.category, span.label), start_s=span.start_s, end_s=span.end_s,
                side=not span.main and span.category is not Category.DP_SYNC)
            for span in spans for d in span.devices]
    if not bars:
        raise InputError("no spans to draw: a timeline needs the SimPy engine's spans")
    return _with_idle(title, rows, bars)


def measured(report: RunReport, cluster: Cluster, placement: Placement, title: str,
             where: str = "run report") -> Timeline:
    """The last iteration of an `executor run --out` report (profiler.run_report), one row per rank
    (a rank is its device). Under GPipe (the study's runtime) the simulator moves transfers on
    streams beside the compute and counts a stage waiting for its input as idle; the executor's
    waits for a transfer are drawn the same way, as strips over idle time (as `sim validate`
    counts them). A predicted strip runs from when the transfer was posted, a measured one from
    when the stage began to wait for it."""
    rows = _rows(cluster, placement)
    overlapped = report.schedule == "gpipe"
    bars = []
    for rank in report.ranks:
        if rank.rank not in rows:
            raise InputError(f"{where}: rank {rank.rank} is not a device of the plan's placement")
        bars += [Bar(device=rank.rank, kind=kind_of(span.category, span.label), start_s=span.start_s, end_s=span.end_s,
                     side=overlapped and span.category is Category.PIPELINE) for span in rank.spans]
    if not bars:
        raise InputError(f"{where}: the report has no spans to draw")
    return _with_idle(title, rows, bars)


def draw(ax, timeline: Timeline, *, lane: tuple[float, float] = (0.0, 1.0), regions: bool = True,
         end_s: float | None = None) -> None:
    """Draw ``timeline`` on matplotlib axes: row i spans y in [i, i + 1), the bars of this
    timeline the part ``lane`` of it (overlay: (0, 0.5) and (0.5, 1))."""
    index = {row.device: i for i, row in enumerate(timeline.rows)}
    low, high = lane
    height = high - low
    groups: dict[tuple[int, str, bool], list[tuple[float, float]]] = {}
    for bar in timeline.bars:
        groups.setdefault((bar.device, bar.kind, bar.side), []).append((bar.start_s, bar.end_s - bar.start_s))
    for (device, kind, side), spans in sorted(groups.items(), key=lambda item: (item[0][2], KINDS.index(item[0][1]),
                                                                                  item[0][0])):
        y = index[device] + low
        if side:  # receives at the head of the row, sends at its foot
            box = (y + 0.04 * height, 0.2 * height) if kind == "receive" else (y + 0.76 * height, 0.2 * height)
        else:
            box = (y + 0.08 * height, 0.84 * height)
        ax.broken_barh(sorted(spans), box, facecolors=COLOURS[kind], linewidth=0)
    _frame(ax, timeline, regions, end_s or timeline.end_s)


def _frame(ax, timeline: Timeline, regions: bool, end_s: float) -> None:
    rows = timeline.rows
    ax.set_ylim(len(rows), 0)
    ax.set_xlim(0, end_s * 1.01)
    ax.set_xlabel("seconds into the iteration")
    size = max(4.0, min(8.0, 400 / max(len(rows), 1)))
    ax.set_yticks([i + 0.5 for i in range(len(rows))])
    ax.set_yticklabels([row.label for row in rows], fontsize=size)
    ax.tick_params(axis="y", length=0)
    for i in range(1, len(rows)):  # a line between regions, a thinner one between stages
        if rows[i].region != rows[i - 1].region:
            ax.axhline(i, color="black", linewidth=0.8)
        elif rows[i].stage != rows[i - 1].stage:
            ax.axhline(i, color="#999999", linewidth=0.3)
    if regions:  # named on the right
        start = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i].region != rows[start].region:
                ax.text(1.005, 1 - (start + i) / 2 / len(rows), rows[start].region, transform=ax.transAxes,
                        rotation=-90, va="center", ha="left", fontsize=size + 1)
                start = i
    ax.set_title(timeline.title, fontsize=9)


def legend(fig, halves: tuple[str, str] | None = None) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=COLOURS[k], label=k) for k in KINDS]
    title = f"upper half of a row: {halves[0]}, lower half: {halves[1]}" if halves else None
    fig.legend(handles=handles, loc="outside lower center", ncol=len(KINDS), fontsize=8, frameon=False, title=title,
               title_fontsize=8)


def figure(*timelines: Timeline, overlay: bool = False, halves: tuple[str, str] = ("predicted", "measured")):
    """A matplotlib Figure of one timeline, or of two side by side (same rows, one time scale)
    or overlaid (the first in the upper half of each row, the second in the lower, on one time
    axis; ``halves`` names them in the legend)."""
    from matplotlib.figure import Figure

    if not 1 <= len(timelines) <= 2:
        raise ValueError("draw one timeline, or two to compare")
    rows = timelines[0].rows
    if any(t.rows != rows for t in timelines):
        raise InputError("the timelines to compare have different devices")
    height = 1.6 + 0.16 * len(rows)
    if overlay:
        fig = Figure(figsize=(10, height + 0.3), layout="constrained")
        ax = fig.add_subplot()
        end = max(t.end_s for t in timelines)
        for i, (timeline, lane) in enumerate(zip(timelines, ((0.0, 0.5), (0.5, 1.0)))):
            draw(ax, timeline, lane=lane, end_s=end, regions=i == 0)
        ax.set_title(" vs ".join(t.title for t in timelines), fontsize=9)
    else:
        fig = Figure(figsize=(7 * len(timelines), height), layout="constrained")
        axes = fig.subplots(1, len(timelines), sharey=True, squeeze=False)[0]
        end = max(t.end_s for t in timelines)  # one scale, so lengths compare across panels
        for i, (ax, timeline) in enumerate(zip(axes, timelines)):
            draw(ax, timeline, regions=i == len(timelines) - 1, end_s=end)
    legend(fig, halves if overlay and len(timelines) == 2 else None)
    return fig
