"""CBC for the ILP module (scheduler.ilp): PuLP's bundled CBC, run as a child this process owns.

PuLP's PULP_CBC_CMD starts CBC with Popen and waits; an interrupt (Ctrl-C, SIGINT to `sim plan`)
raises in that wait and leaves CBC running, and its model and solution files in the temporary
folder. Here CBC runs in a process group of its own, killed with its group and waited for when the
wait ends in any exception, and its files live in a folder the caller owns (a TemporaryDirectory
that goes with them). The command line is PuLP's (coin-or/pulp `pulp/apis/coin_api.py`,
COIN_CMD.solve_CBC) for what the ILP module asks: a MIP from an MPS file, no warm start.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pulp


class OwnedCBC(pulp.PULP_CBC_CMD):
    """PULP_CBC_CMD whose files are in ``folder`` and whose child is killed on an interrupt."""

    def __init__(self, folder: str | os.PathLike[str], **options) -> None:
        super().__init__(keepFiles=False, **options)
        self.tmpDir = str(folder)

    def solve_CBC(self, lp: pulp.LpProblem, use_mps: bool = True) -> int:
        folder = Path(self.tmpDir)
        model, solution = folder / "model.mps", folder / "model.sol"
        variables, variable_names, constraint_names, _ = lp.writeMPS(str(model), rename=1)
        args = [self.path, str(model)] + (["-max"] if lp.sense == pulp.LpMaximize else [])
        if self.timeLimit is not None:
            args += ["-sec", str(self.timeLimit)]
        for option in self.options + self.getOptions():
            args += f"-{option}".split()
        args += ["-solve" if self.mip else "-initialSolve", "-printingOptions", "all", "-solution", str(solution)]
        code = _run_owned(args, self.optionsDict.get("logPath") or os.devnull)
        if code != 0 or not solution.exists():
            raise pulp.PulpSolverError(f"CBC ({self.path}) stopped with exit status {code} and no solution")
        status, values, reduced, prices, slacks, solution_status = self.readsol_MPS(
            str(solution), lp, variables, variable_names, constraint_names)
        lp.assignVarsVals(values)
        lp.assignVarsDj(reduced)
        lp.assignConsPi(prices)
        lp.assignConsSlack(slacks, activity=True)
        lp.assignStatus(status, solution_status)
        return status


def _run_owned(args: list[str], log: str) -> int:
    """Run ``args`` in a new process group, output to ``log``; an exception in the wait (a
    KeyboardInterrupt) kills the group and reaps the child before it goes on."""
    with open(log, "w") as out:
        child = subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return child.wait()
        except BaseException:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it had ended on its own
            child.wait()
            raise
