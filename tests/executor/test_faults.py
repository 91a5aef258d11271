"""`executor run` under faults, as a user's terminal sees them: the launcher killed, a rank killed,
a rank frozen, Ctrl-C. Each run must stop within its timeout, name the rank and the cause, and
leave no rank process behind (each rank writes its PID: TASKLET_EXECUTOR_PIDS)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.distributed
PLAN = Path(__file__).resolve().parents[2] / "examples" / "cpu-pipeline-plan.json"  # gpt-small P2T1D2
RANKS = 4
TIMEOUT_S = 5


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _as_in_a_terminal() -> None:
    """SIGINT as a terminal delivers it: a test suite started in the background (`.ci/run &`)
    ignores SIGINT, and a child inherits that, so Ctrl-C would never reach the launcher."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def launch(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    pids = tmp_path / "pids"
    pids.mkdir()
    env = dict(os.environ, TASKLET_EXECUTOR_PIDS=str(pids))
    process = subprocess.Popen([sys.executable, "-m", "executor.cli", "run", str(PLAN), "--iterations", "50",
                                "--warmup", "0", "--timeout", str(TIMEOUT_S), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=_as_in_a_terminal)
    return process, pids


def rank_pids(pids: Path, process: subprocess.Popen) -> dict[int, int]:
    """Every rank's PID once all have written theirs (the ranks are up and training)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = {int(p.stem.split("-")[1]): int(p.read_text()) for p in pids.glob("rank-*.pid")}
        if len(found) == RANKS:
            time.sleep(1.0)  # into the first iterations
            return found
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the ranks did not start within 120 s")


def assert_no_rank_left(ranks: dict[int, int], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while any(alive(pid) for pid in ranks.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [rank for rank, pid in ranks.items() if alive(pid)], "ranks outlived the run"


def finish(process: subprocess.Popen, within_s: float) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"the run did not stop within {within_s} s")
    return process.returncode, err


def test_a_killed_launcher_leaves_no_rank_behind(tmp_path) -> None:
    process, pids = launch(tmp_path, "--quiet")
    ranks = rank_pids(pids, process)
    process.kill()
    process.wait()
    assert_no_rank_left(ranks)


def test_a_killed_rank_stops_the_run_naming_it(tmp_path) -> None:
    process, pids = launch(tmp_path, "--quiet")
    ranks = rank_pids(pids, process)
    os.kill(ranks[2], signal.SIGKILL)
    code, err = finish(process, TIMEOUT_S + 30)
    assert code == 1 and "Traceback" not in err
    assert "rank 2 was killed by SIGKILL" in err, err
    assert_no_rank_left(ranks)


def test_a_frozen_rank_stops_the_run_within_its_timeout_naming_it(tmp_path) -> None:
    process, pids = launch(tmp_path, "--quiet")
    ranks = rank_pids(pids, process)
    os.kill(ranks[3], signal.SIGSTOP)
    code, err = finish(process, TIMEOUT_S + 30)  # fails the test if the run outlives its timeout by 30 s
    assert code == 1 and "Traceback" not in err
    assert "rank 3 stopped responding" in err, err
    assert_no_rank_left(ranks)


def test_ctrl_c_stops_every_rank_at_once(tmp_path) -> None:
    out = tmp_path / "run.json"
    process, pids = launch(tmp_path, "--quiet", "--out", str(out))
    ranks = rank_pids(pids, process)
    process.send_signal(signal.SIGINT)
    code, err = finish(process, 10)
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("executor: interrupted"), err
    assert_no_rank_left(ranks, within_s=5)
    assert not out.exists()  # the timings are gathered at the end: nothing half-written
