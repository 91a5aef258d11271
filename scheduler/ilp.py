"""Exact placement by mixed-integer programming (PuLP; HiGHS, or CBC as the fallback).

The model works on twin classes of devices (scheduler.classes), not on devices: a solution is
how many devices of each class every stage group holds, and which class pairs carry each
pipeline boundary. Positions along the pipeline are the stages in order, so the stage order
(the study's open path) is part of the solution rather than a search of its own.

The study's objective (docs/facts.md §5), for groups g = 0..P-1 in pipeline order:
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
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pulp

from profiler.errors import InputError, NoSolution
from profiler.files import check_folder, write_atomic
from scheduler.cbc import OwnedCBC
from scheduler.classes import DeviceClasses, device_classes, interchangeable
from scheduler.comm_cost import comm_objective
from scheduler.search import relative_gap

SOLVERS = ("highs", "cbc")


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
    with tempfile.TemporaryDirectory(prefix="tasklet-cbc-") as tmp:  # CBC's files go with it, interrupted or not
        log = Path(tmp) / "cbc.log"
        model.solve(OwnedCBC(tmp, msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads, logPath=str(log)))
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


def write_lp(model: pulp.LpProblem, path: str | Path) -> None:
    """The model as an LP file, written whole or not at all: PuLP writes into a folder of our
    own, then the text replaces ``path`` at once (profiler.files.write_atomic)."""
    target = check_folder(path)
    with tempfile.TemporaryDirectory(prefix="tasklet-lp-") as tmp:
        written = Path(tmp) / "model.lp"
        model.writeLP(str(written))
        text = written.read_text()
    write_atomic(target, text)


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
        write_lp(built.model, lp_file)
    optimal, bound = solve(built.model, solver, time_limit_s, gap)
    _check_solution(built.model, "comm")
    groups = built.groups()
    value = comm_objective(groups, problem.tables, problem.dp_bytes, problem.pp_bytes)
    return IlpResult(groups=groups, value=value, bound=min(bound, value), optimal=optimal,
                     solver_s=time.perf_counter() - started)
