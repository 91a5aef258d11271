"""`sim report`: the study's table for each scenario, written as Markdown, CSV and PNG charts.

For every scenario and setting (layers, global batch) each system's predicted seconds per
iteration (analytic estimator) and PFLOP/s; charts of the systems per scenario, of the speed-up
of Ours w/ scheduler over Megatron-Optimal across scenarios, and one predicted timeline (SimPy)
per scenario. "Ours w/ scheduler" is the deterministic search (scheduler.time_search: no clock,
no bound MILP), so the same inputs write the same files on any machine; `sim predict`'s column,
given seconds and a MILP, can find a faster plan where the MILP's candidates help.

The settings are independent: they run in a pool of processes and their results are collected
by key, so the order they finish in does not matter. Only then is anything written: the whole
folder, built beside the output and renamed into place. Figures are drawn in matplotlib's default
style, whatever the user's matplotlibrc says, so with the same software the bytes are the same.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from profiler.errors import InputError
from profiler.files import write_atomic
from profiler.model import TrainingSpec, gpt3_xl
from profiler.scenarios import scenario
from simulator.cost.job import Job
from simulator.outputs import charts, timeline
from simulator.outputs.render import SYSTEM_TITLES, system_cells
from simulator.predict import predict
from simulator.prediction import PredictionTable, SystemResult, TableRow
from simulator.study.systems import STUDY_MEGATRON_CONFIGS
from simulator.study.table import check_setting, predict_table, scheduler_settings

SYSTEMS = charts.SYSTEM_ORDER
DEFAULT_LAYERS = (24, 32, 40)  # docs/facts.md §1
DEFAULT_BATCHES = (1024, 2048, 4096)


@dataclass(frozen=True, slots=True)
class CaseReport:
    name: str
    summary: str
    table: PredictionTable
    timeline: timeline.Timeline | None  # None: no system of the first setting fits in memory
    timeline_system: str | None


def _row(case: str, layers: int, batch: int) -> TableRow:
    cluster = scenario(case).build()
    return predict_table(cluster, case, gpt3_xl, [layers], [batch],
                         search=scheduler_settings(cluster, deterministic=True)).rows[0]


def _timeline(case: str, row: TableRow) -> tuple[timeline.Timeline | None, str | None]:
    """SimPy spans of the first setting: Ours w/ scheduler's plan, else the fastest system."""
    fitting = {k: v for k, v in row.systems.items() if v.iteration_s is not None and v.placement is not None}
    if not fitting:
        return None, None
    key = "ours_scheduled" if "ours_scheduled" in fitting else min(fitting, key=lambda k: fitting[k].iteration_s)
    cluster, placement = scenario(case).build(), fitting[key].placement
    job = Job(cluster=cluster, model=gpt3_xl(row.layers), training=TrainingSpec(global_batch=row.batch))
    prediction, spans = predict(job, placement, engine="simpy", record_spans=True)
    title = (f"{case}: {SYSTEM_TITLES[key]} ({placement.config}), {row.layers} layers, batch {row.batch}: "
             f"{prediction.iteration_s:.2f} s predicted (SimPy)")
    return timeline.predicted(spans, cluster, placement, title), key


def run_report(cases: list[str], layers: list[int], batches: list[int], jobs: int = 1,
               progress: Callable[[str], None] | None = None) -> list[CaseReport]:
    """Every (case, layers, batch) row, then each case's timeline, ``jobs`` processes at a time
    (no more than there are settings). Settings that apply to no system are refused before any
    work; a failing setting cancels the ones not yet started."""
    say = progress or (lambda _: None)
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}")
    names = [scenario(c).name for c in cases]
    for name in names:
        size = scenario(name).build().size
        for n in layers:
            for b in batches:
                check_setting(size, n, b)
    units = [(name, n, b) for name in names for n in layers for b in batches]
    rows: dict[tuple[str, int, int], TableRow] = {}
    started = time.perf_counter()
    # spawn, not fork: the caller may hold threads (torch's, a notebook's) whose locks a fork would copy
    pool = (_Inline() if min(jobs, len(units)) == 1 else
            ProcessPoolExecutor(max_workers=min(jobs, len(units)), mp_context=multiprocessing.get_context("spawn")))
    try:
        futures = {pool.submit(_row, *unit): unit for unit in units}
        for done, future in enumerate(as_completed(futures), start=1):
            unit = futures[future]
            rows[unit] = future.result()
            say(f"{done}/{len(units)} {unit[0]}: {unit[1]} layers, batch {unit[2]} "
                f"({time.perf_counter() - started:.0f} s)")
        firsts = {name: rows[name, layers[0], batches[0]] for name in names}
        timelines = {pool.submit(_timeline, name, row): name for name, row in firsts.items()}
        drawn = {}
        for future in as_completed(timelines):
            drawn[timelines[future]] = future.result()
            say(f"timeline of {timelines[future]} ({time.perf_counter() - started:.0f} s)")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [CaseReport(name=name, summary=scenario(name).summary,
                       table=PredictionTable(case=name, engine="analytic",
                                             rows=tuple(rows[name, n, b] for n in layers for b in batches)),
                       timeline=drawn[name][0], timeline_system=drawn[name][1]) for name in names]


class _Inline:
    """A stand-in for a pool of one: runs each call at submit, in this process."""

    def submit(self, fn, *args):
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None


def pflops(layers: int, batch: int, seconds: float | None) -> float | None:
    """PFLOP/s: docs/facts.md §1's FLOPs of an iteration over the predicted seconds."""
    return None if seconds is None else gpt3_xl(layers).iteration_flops(batch) / seconds / 1e15


def csv_text(reports: list[CaseReport]) -> str:
    """One line per (scenario, setting, system), then one per Megatron configuration."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["case", "layers", "batch", "system", "config", "iteration_s", "pflop_per_s", "gap"])
    for report in reports:
        for row in report.table.rows:
            for key in SYSTEMS:
                result = row.systems.get(key)
                if result is not None:
                    writer.writerow([report.name, row.layers, row.batch, key, result.config or "",
                                     _number(result.iteration_s), _number(pflops(row.layers, row.batch,
                                                                                 result.iteration_s)),
                                     _number(result.gap)])
            for config, seconds in row.megatron_configs.items():
                writer.writerow([report.name, row.layers, row.batch, "megatron_config", config, _number(seconds),
                                 _number(pflops(row.layers, row.batch, seconds)), ""])
    return out.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def markdown(reports: list[CaseReport]) -> str:
    lines = ["# Tasklet report: predicted seconds per iteration of GPT3-XL", "",
             "GPT3-XL as the study trained it (docs/facts.md §1: fp16, micro-batch 1, activation recompute, SGD), "
             "seconds per iteration from the analytic estimator; PFLOP/s is docs/facts.md §1's FLOPs of the "
             "layers (4× the forward: forward, recompute, backward) over those seconds. **Bold**: the best of "
             "a row; OOM: does not fit in memory; -: the system does not apply to the setting (the batch does "
             "not split over its replicas, or the study's 8 stages do not divide the layers or the GPUs). "
             "Ours w/ scheduler is the deterministic search (no clock, no bound MILP), so with the same "
             "software this report is the same on every run. The timelines are SimPy runs of the first "
             "setting.", "",
             "Systems: **Megatron-PP** P8T1 on Megatron's rank layout; **Megatron-Optimal** its fastest "
             "configuration that fits; **Ours w/o scheduler** the study's runtime on random assignments "
             "(mean of seeds 0, 1, 2); **Ours w/ scheduler** the same runtime on the scheduler's plan.", ""]
    if any(charts.speedups(r.table) for r in reports):
        lines += ["## Speed-up of Ours w/ scheduler over Megatron-Optimal", "", "![speed-up](speedup.png)", "",
                  "Megatron-Optimal is the fastest of every configuration that fits; the study's own was the "
                  "fastest of the four it ran (P8T1, P1T8, P4T2, P2T4; docs/facts.md §4), and it found the scheduled "
                  "runtime ahead of it in all five scenarios. \"Ahead in\": the settings with a speed-up "
                  "above 1.", "", _speedup_table(reports), ""]
    for report in reports:
        lines += [f"## {report.name}: {report.summary}", "", f"![{report.name}]({report.name}-systems.png)", "",
                  _case_table(report.table), ""]
        if report.timeline is not None:
            lines += [f"![{report.name} timeline]({report.name}-timeline.png)", ""]
    return "\n".join(lines).rstrip() + "\n"


def _speedup_table(reports: list[CaseReport]) -> str:
    """Per scenario, the speed-up over Megatron-Optimal (every configuration that fits) and over
    the fastest of the four configurations the study ran, with how many settings are ahead: the
    study's conclusion was the scheduled runtime ahead of Megatron in all five scenarios."""
    first_row = reports[0].table.rows[0]
    label = f"{first_row.layers} L, {first_row.batch}"
    rows = [f"| scenario | lowest | highest | at {first_row.layers} layers, batch {first_row.batch} | ahead in | "
            "over the study's configurations | ahead in |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for report in reports:
        values = charts.speedups(report.table)
        if values:
            first = dict(values).get(label)
            study = study_speedups(report.table)
            rows.append(f"| {report.name} | {min(v for _, v in values):.2f}× | {max(v for _, v in values):.2f}× | "
                        + ("-" if first is None else f"{first:.2f}×") + f" | {_ahead([v for _, v in values])} | "
                        + (f"{min(study):.2f}–{max(study):.2f}× | {_ahead(study)} |" if study else "- | - |"))
    return "\n".join(rows)


def study_speedups(table: PredictionTable) -> list[float]:
    """Per setting, the fastest of the study's Megatron configurations that fits ÷ Ours w/ scheduler."""
    out = []
    for row in table.rows:
        ours = row.systems.get("ours_scheduled")
        theirs = [s for name, s in row.megatron_configs.items() if s is not None
                  and any(name.startswith(f"P{pp}T{tp}D") for pp, tp in STUDY_MEGATRON_CONFIGS)]
        if ours and ours.iteration_s and theirs:
            out.append(min(theirs) / ours.iteration_s)
    return out


def _ahead(speedups: list[float]) -> str:
    return f"{sum(v > 1 for v in speedups)} of {len(speedups)}"


def _case_table(table: PredictionTable) -> str:
    keys = [k for k in SYSTEMS if any(k in row.systems for row in table.rows)]
    rows = ["| layers | batch | " + " | ".join(SYSTEM_TITLES[k] for k in keys) + " |",
            "|---:|---:|" + "---:|" * len(keys)]
    for row in table.rows:
        cells = system_cells(row, keys, lambda key, result, best: _cell(row, key, result, best))
        rows.append(f"| {row.layers} | {row.batch} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _cell(row: TableRow, key: str, result: SystemResult, best: float) -> str:
    """Seconds and PFLOP/s (and Megatron-Optimal's configuration), bold where best in the row."""
    text = f"{result.iteration_s:.2f} s · {pflops(row.layers, row.batch, result.iteration_s):.2f} PF/s"
    if key == "megatron_optimal" and result.config:
        text += f" ({result.config})"
    return f"**{text}**" if result.iteration_s <= best else text


REPORT_FILES = ("report.md", "predictions.csv", "speedup.png")  # and NAME-systems.png, NAME-timeline.png


def check_output(folder: Path) -> None:
    """Before any work: ``folder`` is missing, empty or an earlier report (only the files a
    report writes), in a folder that exists and can be written to."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    if not folder.parent.is_dir():
        raise InputError(f"{folder}: folder {folder.parent} does not exist")
    if not os.access(folder.parent, os.W_OK):
        raise InputError(f"{folder}: cannot write into {folder.parent}")
    if folder.is_dir():
        strangers = sorted(p.name for p in folder.iterdir() if not _a_report_file(p))
        if strangers:
            raise InputError(f"{folder}: holds files a report does not write ({', '.join(strangers[:3])}"
                             f"{', ...' if len(strangers) > 3 else ''}): give a new or empty folder")


def _a_report_file(path: Path) -> bool:
    return path.is_file() and (path.name in REPORT_FILES or path.name.endswith(("-systems.png", "-timeline.png")))


def write_report(reports: list[CaseReport], folder: Path) -> list[Path]:
    """report.md, predictions.csv and the PNGs into ``folder``, as one: they are written into a
    new folder beside it, which then takes its place (an earlier report there goes, so no file of
    it stays beside the new ones). Returns the paths written."""
    check_output(folder)
    files: dict[str, bytes | str] = {}
    with charts.default_style():
        for report in reports:
            fig, axes = charts.new_figure(9, 4.2)
            charts.systems_chart(axes[0][0], report.table)
            files[f"{report.name}-systems.png"] = charts.png_bytes(fig)
            if report.timeline is not None:
                files[f"{report.name}-timeline.png"] = charts.png_bytes(timeline.figure(report.timeline))
        if any(charts.speedups(r.table) for r in reports):
            fig, axes = charts.new_figure(9, 4.2)
            charts.speedup_chart(axes[0][0], [r.table for r in reports if charts.speedups(r.table)])
            files["speedup.png"] = charts.png_bytes(fig)
    files["predictions.csv"] = csv_text(reports)
    files["report.md"] = markdown(reports)
    fresh = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, content in files.items():
            write_atomic(fresh / name, content)
        os.chmod(fresh, 0o777 & ~_umask())
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old / folder.name)
            try:
                os.replace(fresh, folder)
            except BaseException:
                os.replace(old / folder.name, folder)  # the earlier report back as it was
                shutil.rmtree(old)
                raise
            shutil.rmtree(old)
        else:
            os.replace(fresh, folder)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return [folder / name for name in files]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
