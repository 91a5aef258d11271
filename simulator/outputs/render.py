"""Plain-text tables for the terminal: aligned columns, the best value of a row marked."""

from __future__ import annotations

from typing import Callable

from scheduler.search import relative_gap
from simulator.prediction import Prediction, PredictionTable, SystemResult, TableRow

SYSTEM_TITLES = {"megatron_pp": "Megatron-PP", "megatron_optimal": "Megatron-Optimal",
                 "ours_random": "Ours w/o scheduler", "ours_scheduled": "Ours w/ scheduler"}


def _cell(seconds: float | None, best: float | None, extra: str = "") -> str:
    if seconds is None:
        return "OOM"
    mark = " *" if best is not None and seconds <= best else ""
    return f"{seconds:.2f}{extra}{mark}"


def align(rows: list[list[str]], left: int = 2) -> str:
    """A header row, a rule, then the rows; the first ``left`` columns left-aligned, the rest
    (numbers) right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i >= left else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def system_cells(row: TableRow, keys: list[str], text: Callable[[str, SystemResult, float], str]) -> list[str]:
    """One cell per system of ``row``: "-" where it does not apply, "OOM" where it does not fit,
    else ``text(key, result, best)``, best being the row's fewest seconds."""
    values = [row.systems[k].iteration_s for k in keys if k in row.systems]
    best = min((v for v in values if v is not None), default=None)
    cells = []
    for key in keys:
        result = row.systems.get(key)
        cells.append("-" if result is None else "OOM" if result.iteration_s is None else text(key, result, best))
    return cells


def systems_table(table: PredictionTable) -> str:
    keys = list(dict.fromkeys(key for row in table.rows for key in row.systems))
    rows = [["layers", "batch"] + [SYSTEM_TITLES.get(k, k) for k in keys]]

    def text(key: str, result: SystemResult, best: float) -> str:
        extra = f" ({result.config})" if key == "megatron_optimal" and result.config else ""
        if result.gap is not None:
            extra = f" (gap {result.gap:.0%})"
        return _cell(result.iteration_s, best, extra)

    for row in table.rows:
        rows.append([str(row.layers), str(row.batch)] + system_cells(row, keys, text))
    return align(rows)


def configs_table(table: PredictionTable) -> str:
    names = list(dict.fromkeys(name for row in table.rows for name in row.megatron_configs))
    rows = [["layers", "batch"] + names]
    for row in table.rows:
        values = [row.megatron_configs.get(n) for n in names]
        best = min((v for v in values if v is not None), default=None)
        rows.append([str(row.layers), str(row.batch)] + [_cell(v, best) if n in row.megatron_configs else "-"
                                                         for n, v in zip(names, values)])
    return align(rows)


def render_table(table: PredictionTable, title: str) -> str:
    engine = "SimPy simulation" if table.engine == "simpy" else "analytic estimator"
    parts = [f"{title}: seconds per iteration ({engine}); * best in row, OOM does not fit in memory; "
             "gap: how far the scheduled plan may be from the best, proven by its MILP bound", "",
             systems_table(table), "", "Megatron configurations (PxTyDz, default rank layout):", "",
             configs_table(table)]
    return "\n".join(parts)


def render_prediction(prediction: Prediction, plan, source: str) -> str:
    """One plan's prediction: the iteration, its breakdown, the fullest device."""
    engine = "SimPy simulation" if prediction.engine == "simpy" else "analytic estimator"
    p = plan.placement
    lines = [f"plan {source}: {p.config} on {plan.cluster.name} ({plan.cluster.size} devices), "
             f"{plan.model.name}, batch {plan.training.global_batch}, {p.schedule.value} / {p.sync.value} "
             f"({p.runtime.value} runtime)",
             f"iteration {prediction.iteration_s:.3f} s ({engine})"]
    rows = [["part", "seconds", "share"]]
    for key, seconds in prediction.breakdown.items():
        rows.append([key.removesuffix("_s"), f"{seconds:.3f}", f"{100 * seconds / prediction.iteration_s:.1f}%"])
    lines += ["", align(rows), ""]
    fullest = max(range(len(prediction.peak_memory_bytes)), key=lambda d: prediction.peak_memory_bytes[d])
    lines.append(f"peak memory {prediction.peak_memory_bytes[fullest] / 2**30:.2f} GiB on device {fullest}")
    return "\n".join(lines)


def render_plan_summary(plan, cluster) -> str:
    """What `sim plan` found: objective, bound and gap, predicted seconds, solver time, and where
    each stage's replicas and each pipeline sit."""
    prov, p = plan.provenance, plan.placement
    bound = "-" if prov.lower_bound is None else f"{prov.lower_bound:.3f}"
    gap = "-" if prov.lower_bound is None else f"{relative_gap(prov.objective_value, prov.lower_bound):.1%}"
    unit = "s (modelled communication)" if prov.objective == "comm" else "s per iteration"
    lines = [f"plan: {p.config} of {plan.model.name}, batch {plan.training.global_batch}, on {cluster.name} "
             f"({cluster.size} devices); method {prov.method}, seed {prov.seed}",
             f"objective ({prov.objective}) {prov.objective_value:.3f} {unit}; lower bound {bound}; gap {gap}",
             f"predicted iteration {prov.predicted_iteration_s:.3f} s (analytic estimator); "
             f"solver {prov.solver_s:.2f} s", ""]
    rows = [["stage", "layers", "replicas by region", "server"]]
    for s, (layers, replicas) in enumerate(zip(p.stage_layers, p.devices)):
        server = replicas[p.server_of(s)][0] if p.sync.value == "ps" else None
        rows.append([str(s), f"{layers[0]}-{layers[1] - 1}", _regions(cluster, [d for g in replicas for d in g]),
                     "-" if server is None else f"{server} ({cluster.region_of(server)})"])
    lines.append(align(rows))
    crossings = [sum(cluster.region_of(p.devices[s][r][0]) != cluster.region_of(p.devices[s + 1][r][0])
                     for s in range(p.pp - 1)) for r in range(p.dp)]
    lines += ["", f"pipelines crossing regions: {sum(c > 0 for c in crossings)} of {p.dp} "
                  f"({sum(crossings)} region crossings in all)"]
    return "\n".join(lines)


def _regions(cluster, devices: list[int]) -> str:
    counts: dict[str, int] = {}
    for d in devices:
        counts[cluster.region_of(d)] = counts.get(cluster.region_of(d), 0) + 1
    return " ".join(f"{region}×{n}" for region, n in counts.items())
