"""`sim validate`: a plan's prediction beside what a run of it measured (`run-report/1`, from
`executor run`): the iteration and each part of the breakdown, with the error in %.

The measured breakdown is read off the run's spans of its last iteration, as the prediction's is
off the simulated ones: per rank, the seconds of each category (forward, backward and the
optimizer are compute; pipeline; dp_sync), idle the rest of the mean measured iteration; then
the mean over ranks. With GPipe (the study's runtime) transfers overlap compute on streams of
their own, so the simulator counts a stage waiting for its input as idle, and so does this; with
1F1B the exchanges block the stage and count as pipeline time in both.

The simulator models the run's conditions: ranks that ran on one machine's CPU shared its cores
(the report gives each rank's host, cores and threads), whatever hosts the plan's cluster names
for the emulated network.

The report is the typed run report (profiler.run_report), checked as it loads; it is then
checked against the plan before anything is compared (``check_report``): it must
carry the plan's fingerprint (`executor run` writes it; a report without one is from an older
executor and is refused: run the plan again), its config, schedule and sync must be the plan's,
and its ranks exactly the plan's devices, each once, in the stage and replica the plan gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from profiler.cluster import Cluster
from profiler.errors import InputError
from profiler.run_report import RankRun, RunReport
from profiler.trace import Category
from scheduler.plan import Plan
from simulator.cost.sharing import Unit, cpu_unit, shared_units

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


def check_report(report: RunReport, plan: Plan, where: str) -> None:
    """Refuse a report that is not of a run of ``plan``: another plan's fingerprint (or none),
    other config, schedule or sync, or ranks that are not the plan's devices each once."""
    found = report.plan_fingerprint
    if found is None:
        raise InputError(f"{where}: the run report has no plan_fingerprint: it is from an older executor; "
                         "run the plan again with `executor run` to validate it")
    if found != plan.fingerprint():
        raise InputError(f"{where}: the run report is of another plan (plan_fingerprint {found[:12]}…, "
                         f"this plan's is {plan.fingerprint()[:12]}…)")
    placement = plan.placement
    for key, expected in (("config", placement.config), ("schedule", placement.schedule.value),
                          ("sync", placement.sync.value)):
        if getattr(report, key) != expected:
            raise InputError(f"{where}: the run's {key} is {getattr(report, key)!r}, the plan's {expected!r}")
    _check_ranks(report, plan, where)


def _check_ranks(report: RunReport, plan: Plan, where: str) -> None:
    """The ranks are the plan's devices, each once (the report's load checks that), each in the
    stage and replica the plan gives it."""
    roles = {d: (s, r) for s, replicas in enumerate(plan.placement.devices) for r, group in enumerate(replicas)
             for d in group}
    for rank in report.ranks:
        if rank.rank not in roles:
            raise InputError(f"{where}: rank {rank.rank!r} is not a device of the plan (its devices: "
                             f"{', '.join(map(str, sorted(roles)))})")
    missing = sorted(set(roles) - {rank.rank for rank in report.ranks})
    if missing:
        raise InputError(f"{where}: the run report lacks rank {', '.join(map(str, missing))} of the plan's "
                         f"{len(roles)}")
    for rank in report.ranks:
        if rank.stage is not None and (rank.stage, rank.replica) != roles[rank.rank]:
            raise InputError(f"{where}: rank {rank.rank} ran stage {rank.stage!r} replica {rank.replica!r}; the plan "
                             f"puts it in stage {roles[rank.rank][0]} replica {roles[rank.rank][1]}")


def measured(report: RunReport) -> tuple[float, dict[str, float]]:
    """(mean iteration seconds, breakdown) of a run: per rank the seconds of each part, idle the
    rest of the mean iteration, then the mean over ranks."""
    iteration = report.mean_iteration_s
    overlapped = report.schedule == "gpipe"
    breakdown = dict.fromkeys(("compute_s", "tp_comm_s", "pipeline_s", "dp_sync_s", "idle_s"), 0.0)
    count = len(report.ranks)
    for rank in report.ranks:
        busy = 0.0
        for span in rank.spans:
            if span.category is Category.BARRIER or (overlapped and span.category is Category.PIPELINE):
                continue  # waiting in a barrier, or for an input: idle, as the simulator counts it
            length = span.end_s - span.start_s
            breakdown[PARTS[span.category.value]] += length / count
            busy += length
        breakdown["idle_s"] += max(0.0, iteration - busy) / count
    return iteration, breakdown


def run_units(report: RunReport, cluster: Cluster, where: str) -> tuple[Unit, ...] | None:
    """The compute units the run's ranks really shared: CPU ranks (rank = device) on one machine
    share its cores, each using its threads, and its loopback (their hosts' slowest interconnect,
    as the cluster says); ranks sharing a GPU as the cluster says. None for a report that does not
    say where its ranks ran."""
    if any(None in (rank.host, rank.cpus, rank.threads) for rank in report.ranks):
        return None
    machines: dict[str, list[RankRun]] = {}
    for rank in report.ranks:
        if not 0 <= rank.rank < cluster.size:
            raise InputError(f"{where}: rank {rank.rank!r} is not a device of the plan's cluster")
        if cluster.devices[rank.rank].gpu == "CPU":
            machines.setdefault(rank.host, []).append(rank)
    units = []
    for host, members in machines.items():
        cores = members[0].cpus
        threads = max(m.threads for m in members)
        if cores >= 1 and threads >= 1 and len(members) > 1:  # they share the cores, or copy on them
            devices = tuple(sorted(m.rank for m in members))
            loopback = min(cluster.host_of(d).interconnect_bandwidth_bytes_per_s for d in devices)
            units.append(cpu_unit(f"{host}:cpu", cores, threads, devices, loopback))
    gpus = tuple(unit for unit in shared_units(cluster) if cluster.devices[unit.devices[0]].gpu != "CPU")
    return tuple(units) + gpus


def profile_warnings(profiles: tuple, report: RunReport) -> list[str]:
    """Where a profile was not measured under the run's conditions: other threads per rank, or
    dropout where the executor trains without (its report says so; older ones ran without too)."""
    threads = {rank.threads for rank in report.ranks if rank.threads is not None}
    out = []
    for profile in profiles:
        if profile.device_kind == "CPU" and profile.threads and threads and threads != {profile.threads}:
            out.append(f"the {profile.device_kind} profile was timed with {profile.threads} threads, the run's ranks "
                       f"used {', '.join(map(str, sorted(threads)))}: measure it with --threads as the run")
        if profile.dropout != report.dropout:
            out.append(f"the {profile.device_kind} profile was timed with dropout {profile.dropout:g}, the run trained "
                       f"with {report.dropout:g}: measure it with --dropout {report.dropout:g}")
    return out


def compare(predicted_s: float, predicted: dict[str, float], run: tuple[float, dict[str, float]]) -> list[Row]:
    """The iteration and each part, against ``run``'s (``measured``). A run that did not time its
    tensor-parallel all-reduces apart (the executor's run inside the layers) has them in its
    compute: so has the prediction here."""
    iteration, breakdown = run
    if breakdown["tp_comm_s"] == 0 and predicted.get("tp_comm_s", 0.0) > 0:
        predicted = dict(predicted, compute_s=predicted.get("compute_s", 0.0) + predicted["tp_comm_s"], tp_comm_s=0.0)
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
