"""`sim validate`: a plan's prediction beside what a run of it measured (`run-report/1`, from
`executor run`): the iteration and each part of the breakdown, with the error in %.

The measured breakdown is read off the run's spans of its last iteration, as the prediction's is
off the simulated ones: per rank, the seconds of each category (forward, backward and the
optimizer are compute; pipeline; dp_sync), idle the rest of the mean measured iteration; then
the mean over ranks. With GPipe (the study's runtime) transfers overlap compute on streams of
their own, so the simulator counts a stage waiting for its input as idle, and so does this; with
1F1B the exchanges block the stage and count as pipeline time in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from profiler.errors import InputError

REPORT_SCHEMA = "run-report/1"
PARTS = {"forward": "compute_s", "backward": "compute_s", "optimizer": "compute_s", "tp_comm": "tp_comm_s",
         "pipeline": "pipeline_s", "dp_sync": "dp_sync_s"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    part: str
    predicted_s: float
    measured_s: float

    @property
    def error(self) -> float | None:
        """(predicted − measured) / measured; None where nothing was measured."""
        return (self.predicted_s - self.measured_s) / self.measured_s if self.measured_s > 0 else None


def measured(report: Any, where: str) -> tuple[float, dict[str, float]]:
    """(mean iteration seconds, breakdown) of a run report."""
    if not isinstance(report, dict) or report.get("schema") != REPORT_SCHEMA:
        raise InputError(f"{where}: expected a run report ({REPORT_SCHEMA}), got schema "
                         f"{report.get('schema') if isinstance(report, dict) else type(report).__name__!r}")
    try:
        seconds = [float(s) for s in report["iteration_s"]]
        ranks = report["ranks"]
        spans = [[(str(s["category"]), float(s["end_s"]) - float(s["start_s"])) for s in rank["spans"]]
                 for rank in ranks]
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{where}: malformed run report ({err!r})") from None
    if not seconds or not spans:
        raise InputError(f"{where}: the run report has no iterations or no ranks")
    iteration = sum(seconds) / len(seconds)
    overlapped = report.get("schedule") == "gpipe"
    breakdown = dict.fromkeys(("compute_s", "tp_comm_s", "pipeline_s", "dp_sync_s", "idle_s"), 0.0)
    for rank in spans:
        busy = 0.0
        for category, length in rank:
            if category not in PARTS:
                raise InputError(f"{where}: unknown span category {category!r}")
            if overlapped and category == "pipeline":
                continue  # waiting for an input: idle, as the simulator counts it
            breakdown[PARTS[category]] += length / len(spans)
            busy += length
        breakdown["idle_s"] += max(0.0, iteration - busy) / len(spans)
    return iteration, breakdown


def compare(predicted_s: float, predicted: dict[str, float], report: Any, where: str) -> list[Row]:
    iteration, breakdown = measured(report, where)
    return [Row(part="iteration", predicted_s=predicted_s, measured_s=iteration)] + [
        Row(part=key.removesuffix("_s"), predicted_s=predicted.get(key, 0.0), measured_s=breakdown[key])
        for key in breakdown]


def render(rows: list[Row], title: str) -> str:
    table = [["part", "predicted s", "measured s", "error"]]
    for row in rows:
        error = "-" if row.error is None else f"{row.error:+.1%}"
        table.append([row.part, f"{row.predicted_s:.4f}", f"{row.measured_s:.4f}", error])
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    lines = [title, ""]
    for i, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
