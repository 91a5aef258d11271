"""Charts of predictions: grouped bars of the systems per setting, the scheduler's speed-up over
Megatron-Optimal across scenarios, what-if sweeps. Functions draw on matplotlib axes they are
given (a notebook's pyplot axes, or a Figure of ``new_figure``). ``png_bytes`` renders a figure
without the metadata that names the matplotlib version, and ``default_style`` sets aside the
user's matplotlibrc, so with the same matplotlib the same predictions give the same bytes;
``save_png`` writes them atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

from profiler.files import write_atomic
from simulator.outputs.render import SYSTEM_TITLES
from simulator.prediction import PredictionTable

SYSTEM_ORDER = ("megatron_pp", "megatron_optimal", "ours_random", "ours_scheduled")
SYSTEM_COLOURS = {"megatron_pp": "#a6a6a6", "megatron_optimal": "#4c72b0", "ours_random": "#dd8452",
                  "ours_scheduled": "#55a868"}


def new_figure(width_in: float, height_in: float, rows: int = 1, cols: int = 1):
    """(figure, axes) without pyplot: no global state, no display needed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def default_style():
    """A context in which figures are built and drawn with matplotlib's defaults, not the user's
    rc settings (both building and drawing read them)."""
    import matplotlib.style

    return matplotlib.style.context("default")


def png_bytes(fig, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def save_png(fig, path: str | os.PathLike[str], dpi: int = 110) -> None:
    write_atomic(path, png_bytes(fig, dpi))


def systems_chart(ax, table: PredictionTable, title: str | None = None) -> None:
    """Seconds per iteration of every system, bars grouped by setting (layers, batch); a system
    that does not fit in memory is marked OOM where its bar would be."""
    systems = [k for k in SYSTEM_ORDER if any(k in row.systems for row in table.rows)]
    width = 0.8 / max(len(systems), 1)
    top = max((r.systems[k].iteration_s or 0.0 for r in table.rows for k in systems if k in r.systems), default=1.0)
    for j, key in enumerate(systems):
        xs, heights = [], []
        for i, row in enumerate(table.rows):
            result = row.systems.get(key)
            x = i - 0.4 + width * (j + 0.5)
            if result is None:
                continue
            if result.iteration_s is None:
                ax.text(x, top * 0.01, "OOM", rotation=90, ha="center", va="bottom", fontsize=6)
                continue
            xs.append(x)
            heights.append(result.iteration_s)
        ax.bar(xs, heights, width * 0.95, color=SYSTEM_COLOURS[key], label=SYSTEM_TITLES[key])
    ax.set_xticks(range(len(table.rows)))
    ax.set_xticklabels([f"{row.layers} L\n{row.batch}" for row in table.rows], fontsize=7)
    ax.set_xlabel("layers, global batch (sequences)", fontsize=8)
    ax.set_ylabel("seconds per iteration", fontsize=8)
    ax.set_title(title or f"{table.case}: predicted seconds per iteration ({table.engine})", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(axis="y", linewidth=0.3)
    ax.set_axisbelow(True)


def speedups(table: PredictionTable) -> list[tuple[str, float]]:
    """(setting, Megatron-Optimal ÷ Ours w/ scheduler) where both fit."""
    out = []
    for row in table.rows:
        ours, megatron = row.systems.get("ours_scheduled"), row.systems.get("megatron_optimal")
        if ours and megatron and ours.iteration_s and megatron.iteration_s:
            out.append((f"{row.layers} L, {row.batch}", megatron.iteration_s / ours.iteration_s))
    return out


def speedup_chart(ax, tables: Sequence[PredictionTable]) -> None:
    """Per scenario, one bar per setting: how many times faster Ours w/ scheduler is than
    Megatron-Optimal (above the line at 1: faster)."""
    settings = list(dict.fromkeys(s for t in tables for s, _ in speedups(t)))
    colours = _shades(len(settings))
    width = 0.8 / max(len(settings), 1)
    for j, setting in enumerate(settings):
        xs, heights = [], []
        for i, table in enumerate(tables):
            value = dict(speedups(table)).get(setting)
            if value is not None:
                xs.append(i - 0.4 + width * (j + 0.5))
                heights.append(value)
        ax.bar(xs, heights, width * 0.95, color=colours[j], label=setting)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(tables)))
    ax.set_xticklabels([t.case for t in tables], fontsize=8)
    ax.set_ylabel("Megatron-Optimal ÷ Ours w/ scheduler", fontsize=8)
    ax.set_title("speed-up of Ours w/ scheduler over Megatron-Optimal (predicted)", fontsize=9)
    ax.legend(fontsize=6, ncol=3, frameon=False, title="layers, batch", title_fontsize=7)
    ax.grid(axis="y", linewidth=0.3)
    ax.set_axisbelow(True)


def sweep_chart(ax, points: Sequence, xlabel: str, title: str, log_x: bool = False) -> None:
    """Lines of predicted seconds per iteration against a swept value, one per system; points
    are simulator.study.whatif.Point."""
    systems = [k for k in SYSTEM_ORDER if any(p.system == k for p in points)]
    for key in systems:
        mine = sorted((p.x, p.iteration_s) for p in points if p.system == key and p.iteration_s is not None)
        if mine:
            ax.plot([x for x, _ in mine], [y for _, y in mine], marker="o", markersize=3,
                    color=SYSTEM_COLOURS[key], label=SYSTEM_TITLES[key])
    if log_x:
        ax.set_xscale("log", base=2)
    xs = sorted({p.x for p in points})
    ax.set_xticks(xs, [f"{x:g}" for x in xs])  # the swept values themselves, not powers of 2
    ax.minorticks_off()
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("seconds per iteration", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(linewidth=0.3)


def _shades(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.1 + 0.8 * i / max(n - 1, 1)) for i in range(n)]
