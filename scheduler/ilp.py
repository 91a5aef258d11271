"""Exact placement by mixed-integer programming (PuLP; HiGHS, or CBC as the fallback).

The model works on twin classes of devices (scheduler.classes), not on devices: a solution is
how many devices of each class every stage group holds, and which class pairs carry each
pipeline boundary. Positions along the pipeline are the stages in order, so the stage order
(the study's open path) is part of the solution rather than a search of its own.

The study's objective (FACTS.md §5), for groups g = 0..P-1 in pipeline order:
- DataPCost T ≥ Σ_q a[r,q]·n[g,q] - a[r,r] for every class r present in group g (a device's
  sum over its peers; a[r,q] = 2·(α + c_dp/(D·β)) between classes);
- boundary g's bottleneck matching: a transport of group g's counts onto group g+1's, and the
  boundary costs at least every class pair it uses, b[r,q] = α + c_pp/β. The cost is written as
  a staircase over the distinct values of b (binary "uses a pair costing ≥ level k", monotone in
  k), each binary at least the share of the transport at level k or above (one constraint per
  level rather than a big-M per pair: measured 7.8 s instead of 10.4 s on the world case), plus
  the valid cut "the bottleneck is at least the mean edge cost of the transport".
Minimise T + 2·Σ_g L_g. The transport polytope is integral, so the flows need not be integer.

A solve always reports the best plan found and the solver's proven lower bound (MIP dual bound),
and stops at --time-limit or once the relative gap is within the tolerance asked.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from contextlib import contextmanager
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pulp

from profiler.errors import InputError, NoSolution
from scheduler.classes import DeviceClasses, device_classes, interchangeable
from scheduler.comm_cost import comm_objective
from scheduler.search import relative_gap

SOLVERS = ("highs", "cbc")
LATE_LEVEL_STEP = 0.25  # see _coarse


@dataclass(frozen=True, slots=True, kw_only=True)
class IlpResult:
    groups: list[list[int]]  # stage groups of devices, in pipeline order
    value: float  # the objective of these groups, recomputed on devices
    bound: float  # proven: no placement has a lower objective
    optimal: bool  # the solver proved optimality within its gap tolerance
    solver_s: float

    @property
    def gap(self) -> float:
        return relative_gap(self.value, self.bound)


@dataclass(frozen=True, slots=True)
class Boundary:
    """One pipeline boundary of a CompositionModel: ``flow[r, q]`` pipelines go from class r to
    class q; ``uses[k]`` is 1 when one of them costs ``levels[k]`` or more (k ≥ 1), and
    ``share[k]`` counts those that do."""

    cost: pulp.LpVariable  # ≥ the bottleneck matching's cost
    flow: dict[tuple[int, int], pulp.LpVariable]
    levels: tuple[float, ...]
    uses: dict[int, pulp.LpVariable]
    share: dict[int, pulp.LpAffineExpression]


@dataclass(slots=True)
class CompositionModel:
    """Counts of each class in each of ``positions`` groups of ``group_size`` devices."""

    model: pulp.LpProblem
    classes: DeviceClasses
    positions: int
    group_size: int
    count: dict[tuple[int, int], pulp.LpVariable]
    present: dict[tuple[int, int], pulp.LpVariable]
    _at_least: dict[tuple[int, int, int], pulp.LpVariable] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, classes: DeviceClasses, positions: int, group_size: int) -> "CompositionModel":
        model = pulp.LpProblem(name, pulp.LpMinimize)
        cap = [min(group_size, s) for s in classes.sizes]
        R = len(classes)
        count = {(g, r): model.add_variable(f"count_g{g}_c{r}", 0, cap[r], cat=pulp.LpInteger)
                 for g in range(positions) for r in range(R)}
        present = {(g, r): model.add_variable(f"present_g{g}_c{r}", 0, 1, cat=pulp.LpInteger)
                   for g in range(positions) for r in range(R)}
        for g in range(positions):
            model += pulp.lpSum(count[g, r] for r in range(R)) == group_size, f"group_size_g{g}"
            for r in range(R):
                model += count[g, r] <= cap[r] * present[g, r], f"present_if_counted_g{g}_c{r}"
                model += present[g, r] <= count[g, r], f"counted_if_present_g{g}_c{r}"
        for r in range(R):
            model += pulp.lpSum(count[g, r] for g in range(positions)) == classes.sizes[r], f"class_size_c{r}"
        _order_interchangeable(model, classes, count, positions, cap)
        return cls(model=model, classes=classes, positions=positions, group_size=group_size, count=count,
                   present=present)

    def at_least(self, g: int, r: int, k: int) -> pulp.LpVariable | None:
        """A binary forced to 1 when group g holds at least k devices of class r (k ≥ 1), or
        None if it never can."""
        if k == 1:
            return self.present[g, r]
        cap = min(self.group_size, self.classes.sizes[r])
        if k > cap:
            return None
        key = (g, r, k)
        if key not in self._at_least:
            var = self._at_least[key] = self.model.add_variable(f"at_least_{k}_g{g}_c{r}", 0, 1, pulp.LpInteger)
            self.model += self.count[g, r] <= (k - 1) + (cap - k + 1) * var, f"at_least_{k}_g{g}_c{r}"
        return self._at_least[key]

    def peer_sum_bound(self, g: int, edge: np.ndarray, bound: pulp.LpVariable, tag: str) -> None:
        """bound ≥ Σ_q edge[r,q]·count[g,q] - edge[r,r] for every class r present in group g:
        the largest sum, over a device of the group, of its edges to its peers."""
        R = len(self.classes)
        # Any device has group_size - 1 peers, none cheaper than the cheapest edge: a floor for
        # the bound, which keeps the big-M of an absent class small.
        floor = (self.group_size - 1) * float(np.nanmin(edge))
        bound.lowBound = max(bound.lowBound or 0.0, floor)
        for r in range(R):
            row = [float(edge[r, q]) if not np.isnan(edge[r, q]) else 0.0 for q in range(R)]
            big = max(0.0, self.group_size * max(row[q] for q in range(R) if q != r) - row[r] - floor) \
                if R > 1 else 0.0
            self.model += (bound >= pulp.lpSum(row[q] * self.count[g, q] for q in range(R)) - row[r]
                           - big * (1 - self.present[g, r])), f"{tag}_g{g}_c{r}"

    def bottleneck(self, g: int, edge: np.ndarray, tag: str) -> "Boundary":
        """Boundary g (group g onto group g+1): a transport of the counts, and a cost ≥ its
        bottleneck perfect matching under ``edge``."""
        R = len(self.classes)
        pairs = [(r, q) for r in range(R) for q in range(R) if not np.isnan(edge[r, q])]
        levels = sorted({float(edge[r, q]) for r, q in pairs})
        level_of = {v: k for k, v in enumerate(levels)}
        m = self.model
        flow = {(r, q): m.add_variable(f"{tag}_flow_g{g}_c{r}_c{q}", 0) for r, q in pairs}
        uses = {k: m.add_variable(f"{tag}_uses_g{g}_l{k}", 0, 1, pulp.LpInteger) for k in range(1, len(levels))}
        cost = m.add_variable(f"{tag}_g{g}", levels[0])
        for k in range(2, len(levels)):
            m += uses[k] <= uses[k - 1], f"{tag}_staircase_g{g}_l{k}"
        m += cost >= levels[0] + pulp.lpSum((levels[k] - levels[k - 1]) * uses[k] for k in uses), f"{tag}_levels_g{g}"
        m += cost >= pulp.lpSum(float(edge[r, q]) * flow[r, q] for r, q in pairs) / self.group_size, \
            f"{tag}_mean_edge_g{g}"
        for r in range(R):
            m += pulp.lpSum(flow[r, q] for q in range(R) if (r, q) in flow) == self.count[g, r], f"{tag}_out_g{g}_c{r}"
            m += pulp.lpSum(flow[q, r] for q in range(R) if (q, r) in flow) == self.count[g + 1, r], \
                f"{tag}_in_g{g}_c{r}"
        share = {k: pulp.lpSum(flow[p] for p in pairs if level_of[float(edge[p])] >= k) for k in uses}
        for k in uses:  # any transport at level k or above sets uses[k]; as a share, it also sums to the mean cut
            m += self.group_size * uses[k] >= share[k], f"{tag}_share_g{g}_l{k}"
        return Boundary(cost=cost, flow=flow, levels=tuple(levels), uses=uses, share=share)

    def start_from(self, counts: list[list[int]]) -> list[int]:
        """Offer the solver a starting solution: ``counts[g][r]`` devices of class r in group g.
        Interchangeable classes are relabelled into the order the model asks of them; returns
        where each class went."""
        P, R = self.positions, len(self.classes)
        relabel = list(range(R))
        for group in interchangeable(self.classes):
            ordered = sorted(group, key=lambda r: tuple(counts[g][r] for g in range(P)), reverse=True)
            for target, source in zip(group, ordered):
                relabel[source] = target
        for g in range(P):
            for r in range(R):
                self.count[g, relabel[r]].setInitialValue(counts[g][r])
                self.present[g, relabel[r]].setInitialValue(int(counts[g][r] > 0))
        return relabel

    def groups(self) -> list[list[int]]:
        """The solution as device groups: each class's devices handed out in ascending order."""
        left = [list(m) for m in self.classes.members]
        out = []
        for g in range(self.positions):
            group = []
            for r in range(len(self.classes)):
                k = int(round(self.count[g, r].varValue or 0))
                group += left[r][:k]
                del left[r][:k]
            out.append(sorted(group))
        return out


def _order_interchangeable(model: pulp.LpProblem, classes: DeviceClasses, count: dict, positions: int,
                           cap: list[int]) -> None:
    """Symmetry breaking: of classes that relabel into one another (scheduler.classes.interchangeable),
    any solution can be relabelled so that their count vectors over the positions are in
    lexicographic order, so ask for that order. The vectors are compared as numbers in base
    cap + 1 over as many leading positions as keep the weights exact (a prefix of a lexicographic
    order is one too). Without it the 8 interchangeable hosts of the spot case take the solver
    minutes to prove what it has found."""
    for group in interchangeable(classes):
        base = cap[group[0]] + 1
        digits = max(1, min(positions, int(math.log(1e7) / math.log(base))))
        weight = [base ** (digits - 1 - g) for g in range(digits)]
        for k, (a, b) in enumerate(zip(group, group[1:])):
            model += (pulp.lpSum(w * count[g, a] for g, w in enumerate(weight))
                      >= pulp.lpSum(w * count[g, b] for g, w in enumerate(weight))), f"interchangeable_c{a}_c{b}"


@contextmanager
def _quiet_stdout():
    """HiGHS prints its banner on the C stdout when a solver object is made, whatever its
    options say; `sim plan --json` writes the plan there. Point the descriptor at /dev/null."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class _HiGHSWithStart(pulp.HiGHS):
    """PuLP's HiGHS, handing the solver the variables' initial values (LpVariable.setInitialValue)
    as a starting solution; HiGHS completes a partial one by solving for the rest."""

    def callSolver(self, lp):
        start = [(v.index, v.varValue) for v in lp.variables() if v.varValue is not None]
        if start:
            index, value = zip(*start)
            lp.solverModel.setSolution(len(index), np.array(index, dtype=np.int32), np.array(value, dtype=float))
        super().callSolver(lp)


def solve(model: pulp.LpProblem, solver: str, time_limit_s: float, gap: float,
          threads: int = 2) -> tuple[bool, float]:
    """Run the solver; (proved optimal within ``gap``, proven lower bound). A fixed thread
    count keeps the answer independent of the machine's cores (as long as no limit is hit)."""
    if solver not in SOLVERS:
        raise InputError(f"--solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    if time_limit_s <= 0:
        raise InputError(f"--time-limit must be positive, got {time_limit_s}")
    if solver == "highs":
        with _quiet_stdout():
            model.solve(_HiGHSWithStart(msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads))
        info = model.solverModel.getInfo()
        optimal = model.solverModel.getModelStatus() == model.solverModel.getModelStatus().kOptimal
        return optimal, float(info.mip_dual_bound)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "cbc.log"
        model.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads,
                                      logPath=str(log)))
        text = log.read_text()
    found = re.search(r"^Lower bound:\s*(\S+)", text, re.MULTILINE)
    optimal = "Result - Optimal solution found" in text
    if found:
        return optimal, float(found.group(1))
    # CBC prints no bound when it proves optimality: it stopped within its relative gap.
    value = pulp.value(model.objective)
    return optimal, value * (1 - gap) if optimal else 0.0


def _check_solution(model: pulp.LpProblem, what: str) -> None:
    # pulp reports "Optimal" after a time-out too; the solution status says whether one was found.
    if model.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        raise NoSolution(f"the {what} MILP found no placement within its time limit; raise --time-limit")


def comm_model(problem, classes: DeviceClasses) -> CompositionModel:
    """The study's objective as a MILP over class counts (see the module docstring)."""
    D, P = problem.dp, problem.pp
    alpha, beta = classes.latency_s, classes.bandwidth_bytes_per_s
    with np.errstate(divide="ignore", invalid="ignore"):
        data_edge = 2 * (alpha + problem.dp_bytes / (D * beta))
        pipe_edge = alpha + problem.pp_bytes / beta
    built = CompositionModel.build("study_comm_cost", classes, P, D)
    data_cost = built.model.add_variable("data_cost", 0)
    for g in range(P):
        built.peer_sum_bound(g, data_edge, data_cost, "data_cost")
    pipeline = [built.bottleneck(g, pipe_edge, "pipeline").cost for g in range(P - 1)]
    built.model += data_cost + 2 * pulp.lpSum(pipeline), "data_plus_twice_pipeline"
    return built


def comm_ilp(problem, *, solver: str = "highs", time_limit_s: float = 60.0, gap: float = 1e-3,
             lp_file: str | Path | None = None) -> IlpResult:
    """Minimise the study's cost (scheduler.comm_cost) exactly, with a proven bound."""
    started = time.perf_counter()
    built = comm_model(problem, device_classes(problem.tables))
    if lp_file:
        built.model.writeLP(str(lp_file))
    optimal, bound = solve(built.model, solver, time_limit_s, gap)
    _check_solution(built.model, "comm")
    groups = built.groups()
    value = comm_objective(groups, problem.tables, problem.dp_bytes, problem.pp_bytes)
    return IlpResult(groups=groups, value=value, bound=min(bound, value), optimal=optimal,
                     solver_s=time.perf_counter() - started)


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeBound:
    groups: list[list[int]] | None  # the model's best stage groups, in pipeline order (None: none found in time)
    servers: list[int] | None  # per stage, the class its parameter server should come from
    bound: float  # proven: the estimator gives no placement of these degrees less
    optimal: bool
    solver_s: float


def time_bound_model(inputs, pp: int, dp: int, classes: DeviceClasses) -> tuple[CompositionModel, dict]:
    """A lower bound on the study runtime's iteration (GPipe, parameter-server sync), as the
    analytic estimator times it, minimised over placements. With M micro-batches, per stage
    forward f, backward b, a flow shop of stages and links finishes after Σ p + (M-1)·max p, and
    every transfer takes at least latency + bytes / lone rate. Stage g's replicas are ready no
    sooner than the forward flow shop plus the backward one from the last stage down to g, its
    sync's reduce ends no sooner than every replica's readiness plus its slowest flow to the
    server, and the broadcast adds the slowest flow back. Two bounds per stage, one through the
    forward links' bottleneck, one through the backward's (each is one replica's chain), and
    where transfers cost the same both ways, one per link through both directions of it (the
    replica slowest across a link is slowest back across it too). Periods are no shorter than
    the cheapest transfer. Late
    pipelines (_late_pipelines): per level of transfer cost, those that pay it somewhere are
    late by (M-1)·(the slower period), their gradients then cross the server's NIC one after
    another, and a late replica outside the server's part of the classes still has its own slow
    flow to the server to make."""
    P, D, M = pp, dp, inputs.micro_batches
    f_total, f_max, o = inputs.forward_total_s, inputs.forward_period_s, inputs.optimizer_s
    b_tail, b_max = inputs.backward_tail_s, inputs.backward_period_s
    alpha, rate = classes.latency_s, classes.bandwidth_bytes_per_s
    with np.errstate(divide="ignore", invalid="ignore"):
        act = alpha + inputs.activation_bytes / rate
    built = CompositionModel.build("study_runtime_iteration_bound", classes, P, D)
    m, R = built.model, len(classes)
    t_min = float(np.nanmin(act)) if R > 1 or classes.sizes[0] > 1 else 0.0
    if P > 1:  # every pipeline streams through transfers, none cheaper than t_min: periods are no shorter
        f_max = max(f_max, t_min)
        b_max = [max(b, t_min) if g < P - 1 else b for g, b in enumerate(b_max)]
    forward_links = [built.bottleneck(g, act, "forward_link") for g in range(P - 1)]
    symmetric = np.allclose(np.nan_to_num(act), np.nan_to_num(act.T))
    backward_links = forward_links if symmetric else [built.bottleneck(g, act.T, "backward_link")
                                                     for g in range(P - 1)]
    slowest_forward = m.add_variable("slowest_forward_period", f_max)
    forward_periods = []
    for g, link in enumerate(forward_links):
        m += slowest_forward >= link.cost, f"forward_period_link{g}"
        forward_periods.append(m.add_variable(f"forward_period_via_link{g}", f_max))
        m += forward_periods[-1] >= link.cost, f"forward_period_via_link{g}"
    transfer_ceiling = _streaming_ceiling_s(inputs) if P > 1 else 0.0
    nic = {} if P == 1 else _shared_nic_periods(
        built, inputs, [link.flow for link in forward_links], slowest_forward, f_max,
        max(transfer_ceiling, inputs.forward_ceiling_s), "forward_nic")
    iteration = m.add_variable("iteration", 0)
    late_per_flow, late_excluded = _late_reduce_terms(inputs, classes, D)
    late_pipelines = _late_pipelines(built, act, forward_links[0].levels) if P > 1 else {}
    lone_s = [[[_least_s(inputs, [(_member(classes, q, r), classes.members[r][0])], size) if q != r or classes.sizes[r] > 1
                else 0.0 for r in range(R)] for q in range(R)] for size in inputs.grad_bytes]
    servers = {}
    for g in range(P):
        tail = range(g, P - 1)  # backward links from the last stage down to g
        slowest_backward = m.add_variable(f"slowest_backward_period_g{g}", b_max[g])
        for h in tail:
            m += slowest_backward >= backward_links[h].cost, f"backward_period_g{g}_link{h}"
        if g == 0 and P > 1:  # stage 0's readiness waits on every backward transfer and every stage's compute
            _shared_nic_periods(built, inputs, [{(q, r): v for (r, q), v in link.flow.items()} for link in backward_links],
                                slowest_backward, b_max[0], max(transfer_ceiling, inputs.backward_ceiling_s),
                                "backward_nic")
        sync_in, sync_out, first_flow, servers[g] = _server_terms(built, inputs, g, inputs.grad_bytes[g], D)
        ready = f_total + (P - 1) * t_min + b_tail[g] + len(tail) * t_min
        m += iteration >= ready + (M - 1) * slowest_forward + (M - 1) * b_max[g] + first_flow + sync_out + o[g], \
            f"through_forward_g{g}"
        m += iteration >= ready + (M - 1) * f_max + (M - 1) * slowest_backward + first_flow + sync_out + o[g], \
            f"through_backward_g{g}"
        m += iteration >= ready + (M - 1) * (f_max + b_max[g]) + sync_in + sync_out + o[g], f"through_sync_g{g}"
        if symmetric:  # the replica slowest across link h forward is the slowest back across it too
            for h in tail:
                both = m.add_variable(f"backward_period_g{g}_via_link{h}", b_max[g])
                m += both >= backward_links[h].cost, f"backward_period_g{g}_via_link{h}"
                m += iteration >= ready + (M - 1) * (forward_periods[h] + both) + first_flow + sync_out + o[g], \
                    f"through_link{h}_both_ways_g{g}"
        # Pipelines slow somewhere are late together, and their gradients then all enter the
        # server through its NIC: the reduce ends no sooner than their readiness plus those bytes
        # over the NIC. (crossed = 0 leaves late ≤ 0, and a constraint weaker than through_sync.)
        base = ready + (M - 1) * (f_max + b_max[g])
        for k, (late, crossed, parts) in late_pipelines.items():
            slow = forward_links[0].levels[k]
            extra = (M - 1) * (max(f_max, slow) - f_max)
            if symmetric and g == 0:  # a slow link of the pipeline is on the way back to stage 0 too
                extra += (M - 1) * (max(b_max[g], slow) - b_max[g])
            if extra <= 0:
                continue
            if late_per_flow[g] > 0:
                m += iteration >= (base + extra * crossed + late_per_flow[g] * (late - late_excluded)
                                   + sync_out + o[g]), f"late_pipelines_l{k}_g{g}"
            # A late replica in part C of the classes sends its gradient to the server after
            # it is ready: to a server outside C, at no less than the fastest flow from C.
            for c, (members, stays) in enumerate(parts):
                flow_s = [0.0 if r in members else min(lone_s[g][q][r] for q in members) for r in range(R)]
                if max(flow_s) <= first_flow:
                    continue
                late_here = m.add_variable(f"late_replica_l{k}_part{c}_g{g}", 0, 1, pulp.LpInteger)
                m += D * late_here >= pulp.lpSum(built.count[g, r] for r in members) - stays, \
                    f"late_replica_l{k}_part{c}_g{g}"
                m += iteration >= (base + extra * late_here + first_flow
                                   + pulp.lpSum((flow_s[r] - first_flow) * servers[g][r] for r in range(R))
                                   - (max(flow_s) - first_flow) * (1 - late_here) + sync_out + o[g]), \
                    f"late_replica_to_server_l{k}_part{c}_g{g}"
        _late_server(built, nic, servers[g], g, iteration,
                     lambda tau: (M - 1) * (tau - f_max), base + sync_in + sync_out + o[g])
    m += iteration, "iteration_bound"
    return built, servers


def _streaming_ceiling_s(inputs) -> float:
    """No transfer of GPipe's streaming phases takes longer than this in any round of the
    estimator's mean field (simulator.estimator._streaming_times): a flow always gets at least
    capacity / users of every resource it crosses, and no resource has more users in a phase
    than the GPUs of the host it belongs to (a device sends one transfer a phase and receives one)."""
    hosts = np.asarray(inputs.hosts)
    on_host = np.bincount(hosts)[hosts]
    users = np.where(hosts[:, None] == hosts[None, :], 1, np.maximum(on_host[:, None], on_host[None, :]))
    with np.errstate(divide="ignore", invalid="ignore"):
        seconds = inputs.latency_s + users * inputs.activation_bytes / inputs.rate_bytes_per_s
    np.fill_diagonal(seconds, 0.0)
    return float(np.nanmax(seconds))


def _shared_nic_periods(built: CompositionModel, inputs, phase: list[dict], period: pulp.LpVariable, base_s: float,
                        ceiling_s: float, tag: str) -> dict:
    """period ≥ τ(k) once k of a phase's transfers (``phase[h][src class, dst class]``, one dict
    per boundary) leave, or enter, the host of a class through a resource x of capacity C that all
    of them cross (its NIC). The estimator cuts each transfer on x to max(C − (k−1)·bytes / the
    other pipelines' periods, C / k) and takes latency + bytes / that; no period is ever longer
    than ``ceiling_s`` (the slowest compute, or _streaming_ceiling_s), so every one of those
    transfers takes at least τ(k) = latency + bytes / max(C − (k−1)·bytes / ceiling, C / k).
    Returns, for each class alone on its host and way ("out", "in"), its steps (τ(k), a binary
    forced to 1 when k or more of the phase's transfers cross x)."""
    m, classes, hosts = built.model, built.classes, inputs.hosts
    size = inputs.activation_bytes
    out: dict = {}
    for r, members in enumerate(classes.members):
        home = {hosts[d] for d in members}
        if len(home) > 1 or len(members) < 2:
            continue
        away = [d for d in range(len(hosts)) if hosts[d] not in home]
        if not away:
            continue
        outside = [q for q, others in enumerate(classes.members) if all(hosts[d] not in home for d in others)]
        for way, pairs, key in (("out", [(a, b) for a in members for b in away], lambda q: (r, q)),
                                ("in", [(b, a) for a in members for b in away], lambda q: (q, r))):
            common = _common_resources(inputs, pairs)
            if not common:
                continue
            capacity = min(inputs.capacities[x] for x in common)
            latency = min(inputs.latency_s[a, b] for a, b in pairs)
            steps, last = [], base_s
            for k in range(1, len(members) + 1):
                tau = latency + size / max(capacity - (k - 1) * size / ceiling_s, capacity / k)
                if tau > last:
                    steps.append((k, tau))
                    last = tau
            if not steps:
                continue
            users = pulp.lpSum(flows[key(q)] for flows in phase for q in outside if key(q) in flows)
            rises, last = [], base_s
            for k, tau in steps:
                shared = m.add_variable(f"{tag}_{way}_c{r}_k{k}", 0, 1, pulp.LpInteger)
                m += len(members) * shared >= users - (k - 1), f"{tag}_{way}_c{r}_k{k}"
                rises.append((tau - last) * shared)
                last = tau
                if len(outside) == len(classes) - 1:
                    out.setdefault((r, way), []).append((tau, shared))
            m += period >= base_s + pulp.lpSum(rises), f"{tag}_{way}_period_c{r}"
    return out


def _late_server(built: CompositionModel, nic: dict, server: dict, g: int, iteration: pulp.LpVariable,
                 extra_s, reduce_s) -> None:
    """A server whose own pipeline streams through a saturated NIC is late by extra_s(τ), and
    the whole reduce waits for it: iteration ≥ reduce_s + extra_s(τ). Take a class alone on its
    host and the server's pipeline's run of devices in it: the run ends with a transfer out of the
    host unless it reaches the last stage, and starts with one into the host unless it starts at
    stage 0; it can do neither only if the class has a device in every stage."""
    m, P, R = built.model, built.positions, len(built.classes)
    for r in range(R):
        outs, ins = nic.get((r, "out"), []), nic.get((r, "in"), [])
        rules = [(tau, [shared], built.present[P - 1, r]) for tau, shared in outs]
        rules += [(tau, [shared], built.present[0, r]) for tau, shared in ins]
        if built.classes.sizes[r] < P:
            rules += [(min(t_out, t_in), [s_out, s_in], 0) for t_out, s_out in outs for t_in, s_in in ins]
        for i, (tau, shared, escape) in enumerate(rules):
            if extra_s(tau) > 0:
                m += iteration >= reduce_s + extra_s(tau) * (server[r] + pulp.lpSum(shared) - len(shared) - escape), \
                    f"late_server_g{g}_c{r}_{i}"


def _member(classes: DeviceClasses, q: int, r: int) -> int:
    """A device of class q other than class r's first."""
    return classes.members[q][0] if q != r else classes.members[q][1]


def _coarse(levels: tuple[float, ...], step: float = LATE_LEVEL_STEP) -> list[int]:
    """Levels k ≥ 1 at least ``step`` (relative) above the previous one kept: any subset of the
    levels gives valid constraints, and a few dozen levels close together (the world case) only
    make the model larger and its solve slower."""
    kept, last = [], levels[0]
    for k in range(1, len(levels)):
        if levels[k] >= last * (1 + step):
            kept.append(k)
            last = levels[k]
    return kept


def _late_pipelines(built: CompositionModel, edge: np.ndarray, levels: tuple[float, ...]) -> dict:
    """Per level k ≥ 1 of the transfer costs: (late, crossed), ``late`` at most the number of
    pipelines with a transfer costing levels[k] or more anywhere along them, ``crossed`` a binary
    that is 1 when there is one. A pipeline whose transfers all cost less stays inside one
    component of the classes joined by cheaper edges, so no more of them stay in component C
    than the fewest devices C has in any group, and none where no edge inside C is cheaper."""
    m, classes, P, D = built.model, built.classes, built.positions, built.group_size
    R = len(classes)
    out = {}
    for k in _coarse(levels):
        parent = list(range(R))

        def root(r: int) -> int:
            while parent[r] != r:
                r = parent[r]
            return r

        for r in range(R):
            for q in range(R):
                if r != q and (edge[r, q] < levels[k] or edge[q, r] < levels[k]):
                    parent[root(r)] = root(q)
        components: dict[int, list[int]] = {}
        for r in range(R):
            components.setdefault(root(r), []).append(r)
        parts = []
        for c, members in enumerate(components.values()):
            if not any(edge[r, q] < levels[k] for r in members for q in members):
                parts.append((members, 0))  # no transfer inside it is cheap: no pipeline stays in it
                continue
            stays = m.add_variable(f"pure_pipelines_l{k}_part{c}", 0)
            for g in range(P):
                m += stays <= pulp.lpSum(built.count[g, r] for r in members), f"pure_pipelines_l{k}_part{c}_g{g}"
            parts.append((members, stays))
        late = D - pulp.lpSum(stays for _, stays in parts)
        crossed = m.add_variable(f"late_pipelines_l{k}", 0, 1, pulp.LpInteger)
        m += D * crossed >= late, f"late_pipelines_l{k}"
        out[k] = (late, crossed, parts)
    return out


def _common_resources(inputs, pairs) -> set[int]:
    """The resources every one of these device pairs' routes crosses."""
    common: set[int] | None = None
    for a, b in pairs:
        common = set(inputs.resources(a, b)) if common is None else common & set(inputs.resources(a, b))
        if not common:
            return set()
    return common or set()


def _late_reduce_terms(inputs, classes: DeviceClasses, D: int) -> tuple[list[float], int]:
    """Per stage, the least seconds one gradient takes through the NIC of any server (0 where
    some server has no resource that all flows into it cross), and how
    many of a group's replicas need not cross that NIC: the server, and the peers that share its
    host (those of its class, where not every flow into the server crosses one resource)."""
    excluded, greatest_capacity = 1, 0.0
    for r, members in enumerate(classes.members):
        hub = members[0]
        into = _common_resources(inputs, ((d, hub) for d in range(len(inputs.kinds)) if d != hub))
        if not into:
            into = _common_resources(inputs, ((d, hub) for d in range(len(inputs.kinds)) if d not in members))
            excluded = max(excluded, min(len(members), D))
        # the server may be of any class: the NIC that lets gradients in fastest
        greatest_capacity = max(greatest_capacity, min((inputs.capacities[x] for x in into), default=np.inf))
    return [size / greatest_capacity for size in inputs.grad_bytes], excluded


def _server_terms(built: CompositionModel, inputs, g: int, size: float, D: int):
    """Stage g's reduce (into its server) and broadcast (out of it); the server's class is the
    model's choice. Each phase lasts at least its slowest flow alone, at least the bytes of its
    k flows to (from) one class over the capacity they all cross, and at least the bytes that
    cross any one resource of the server's (its NIC, say) over that resource's capacity. Also
    the cheapest flow any phase has."""
    m, classes = built.model, built.classes
    R = len(classes)
    sync_in = m.add_variable(f"reduce_g{g}", 0)
    sync_out = m.add_variable(f"broadcast_g{g}", 0)
    server = {r: m.add_variable(f"server_g{g}_c{r}", 0, 1, pulp.LpInteger) for r in range(R)}
    if D == 1:
        m += pulp.lpSum(server.values()) == 0, f"no_server_g{g}"
        return sync_in, sync_out, 0.0, server
    m += pulp.lpSum(server.values()) == 1, f"one_server_g{g}"
    cheapest = np.inf
    for r in range(R):
        m += server[r] <= built.present[g, r], f"server_present_g{g}_c{r}"
        hub = classes.members[r][0]
        for q in range(R):
            peers = [d for d in classes.members[q] if d != hub]
            for k in _fan_sizes(min(len(peers), D - 1)):
                held = built.at_least(g, q, k + (q == r))
                if held is None:
                    break
                into = _least_s(inputs, [(p, hub) for p in peers[:k]], size)
                out_of = _least_s(inputs, [(hub, p) for p in peers[:k]], size)
                cheapest = min(cheapest, into, out_of)
                both = server[r] + held - 1
                m += sync_in >= into * both, f"reduce_g{g}_c{q}x{k}_to_c{r}"
                m += sync_out >= out_of * both, f"broadcast_g{g}_c{r}_to_c{q}x{k}"
        _resource_terms(built, inputs, g, r, size, server[r], sync_in, sync_out)
    return sync_in, sync_out, float(cheapest), server


def _fan_sizes(most: int) -> list[int]:
    """Flow counts to bound a fan by: every count up to 8, then doubling (each bound is valid on
    its own; a large group would otherwise need one binary per count)."""
    sizes = list(range(1, min(most, 8) + 1))
    while sizes and sizes[-1] * 2 <= most:
        sizes.append(sizes[-1] * 2)
    if most > 8 and sizes[-1] != most:
        sizes.append(most)
    return sizes


def _least_s(inputs, pairs: list[tuple[int, int]], size: float) -> float:
    """Least time for ``size`` bytes over each of these flows at once: the slowest alone, and
    all their bytes over the smallest capacity they all cross."""
    alone = max(inputs.latency_s[a, b] + size / inputs.rate_bytes_per_s[a, b] for a, b in pairs)
    capacity = min((inputs.capacities[x] for x in _common_resources(inputs, pairs)), default=np.inf)
    together = min(inputs.latency_s[a, b] for a, b in pairs) + len(pairs) * size / capacity
    return float(max(alone, together))


def _resource_terms(built: CompositionModel, inputs, g: int, r: int, size: float, serves, sync_in, sync_out) -> None:
    """With the server in class r: each resource that every member of a class crosses on the
    way into (out of) the server carries one gradient per member of that class in the group."""
    m, classes = built.model, built.classes
    hub = classes.members[r][0]
    for phase, bound, pair in (("reduce", sync_in, lambda d: (d, hub)), ("broadcast", sync_out, lambda d: (hub, d))):
        crossing: dict[int, list[int]] = {}  # resource -> classes all of whose members cross it
        for q, members in enumerate(classes.members):
            for x in _common_resources(inputs, [pair(d) for d in members if d != hub]):
                crossing.setdefault(x, []).append(q)
        for x, qs in crossing.items():
            if sum(min(classes.sizes[q], built.group_size) for q in qs) < 2:
                continue  # a single flow: the lone-flow terms cover it
            per = size / inputs.capacities[x]
            load = pulp.lpSum(built.count[g, q] for q in qs) - (1 if r in qs else 0)
            m += bound >= per * load - per * built.group_size * (1 - serves), f"{phase}_g{g}_c{r}_via_{x}"


def time_bound(inputs, pp: int, dp: int, *, solver: str = "highs", time_limit_s: float = 20.0,
               gap: float = 1e-3, classes: DeviceClasses | None = None,
               start: tuple[list[list[int]], list[int]] | None = None) -> TimeBound:
    """Solve the bound MILP; ``start`` = (stage groups in order, each stage's server device), a
    placement the solver may start from (HiGHS: its bound value prunes the search; measured on
    spot, the optimum proven in 27 s instead of not in 400)."""
    started = time.perf_counter()
    classes = classes or device_classes(inputs.tables, inputs.kinds)
    built, servers = time_bound_model(inputs, pp, dp, classes)
    if start is not None:
        cls = classes.index
        groups, serving = start
        relabel = built.start_from([[sum(cls[d] == r for d in group) for r in range(len(classes))] for group in groups])
        if dp > 1:
            for g, device in enumerate(serving):
                for r in range(len(classes)):
                    servers[g][r].setInitialValue(int(relabel[cls[device]] == r))
    optimal, bound = solve(built.model, solver, time_limit_s, gap)
    bound = bound if np.isfinite(bound) and bound > 0 else 0.0
    if built.model.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        # The dual bound holds without a placement; the search goes on from its other candidates.
        return TimeBound(groups=None, servers=None, bound=bound, optimal=False, solver_s=time.perf_counter() - started)
    chosen = [max(range(len(classes)), key=lambda r: (servers[g][r].varValue or 0.0, -r)) for g in range(pp)]
    return TimeBound(groups=built.groups(), servers=chosen, bound=bound, optimal=optimal,
                     solver_s=time.perf_counter() - started)
