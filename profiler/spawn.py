"""Local ranks for a quick run on one machine (`profiler network --spawn`, `executor run`): N
processes meet on the loopback, run one function, and rank 0's result comes back to the caller.

Rank 0 writes its result to a file (write, then rename) that the caller reads once every rank has
exited: a result sent through a pipe instead would block rank 0 while the caller waits for it to
exit, once the result outgrows the pipe's buffer.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import pickle
import signal
import socket
import sys
import tempfile
import threading
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from profiler.errors import InputError

TIMEOUT = datetime.timedelta(minutes=5)  # a rank that waits this long on a peer gives up
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def free_port() -> int:
    """A free port on the loopback, for a rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rank_device(backend: str) -> torch.device:
    """This rank's device: with NCCL the GPU of its local rank (made current), else the CPU."""
    if backend != "nccl":
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", dist.get_rank())) % max(torch.cuda.device_count(), 1))
    torch.cuda.set_device(device)
    return device


def check_backend(backend: str, ranks_here: int) -> None:
    """InputError unless the backend can run ``ranks_here`` ranks on this host: NCCL needs CUDA,
    and a GPU of its own for each rank (it refuses two ranks of one group on one GPU)."""
    if backend != "nccl":
        return
    if not torch.cuda.is_available() or not dist.is_nccl_available():
        raise InputError(f"--backend nccl needs CUDA and NCCL; this torch ({torch.__version__}) has "
                         f"{'no CUDA device' if not torch.cuda.is_available() else 'no NCCL'}")
    if ranks_here > torch.cuda.device_count():
        raise InputError(f"--backend nccl needs a GPU for each rank: {ranks_here} ranks on this host, torch sees "
                         f"{torch.cuda.device_count()} GPU(s); ranks that share a GPU need --backend gloo")


class RankFailed(RuntimeError):
    """A spawned rank raised, died or stopped responding; the message names the rank and why."""


# After the first rank fails, how long the others get to fail on their own (a peer of a dead rank
# sees its connections close within milliseconds, and of a timed-out one likewise) before the
# launcher kills them; one still running then, while its peers timed out, is the frozen one.
GRACE_S = 2.0


def run_local(worker: Callable[..., Any], ranks: int, backend: str, args: tuple = (),
              timeout: datetime.timedelta = TIMEOUT) -> Any:
    """``worker(*args)`` on ``ranks`` local processes in one process group; rank 0's return value.
    Interrupted (KeyboardInterrupt), every rank is killed before the interrupt goes on; a rank
    dies with this process even when it is killed (``_entry``)."""
    check_backend(backend, ranks)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tasklet-ranks-") as folder:
        result = Path(folder) / "rank0.pickle"
        context = mp.start_processes(_entry, args=(ranks, port, backend, timeout, worker, args, folder, os.getpid()),
                                     nprocs=ranks, start_method="spawn", join=False)
        try:
            codes = _watch(context.processes, Path(folder))
        finally:  # on any way out (an interrupt too) no rank outlives the launcher
            _kill(context.processes)
        if any(code != 0 for code in codes.values()):
            raise RankFailed(_failure(codes, Path(folder)))
        return pickle.loads(result.read_bytes())


def _watch(processes: list, folder: Path) -> dict[int, int | None]:
    """Every rank's exit code as it left on its own, None for one still running when the run was
    given up: once some rank failed and the rest had ``GRACE_S`` to follow, or at once if one died."""
    codes: dict[int, int | None] = {i: None for i in range(len(processes))}
    failed_at = None
    while any(code is None for code in codes.values()):
        running = {processes[i].sentinel: i for i, code in codes.items() if code is None}
        for sentinel in wait(list(running), timeout=0.1):
            processes[running[sentinel]].join()
            codes[running[sentinel]] = processes[running[sentinel]].exitcode
        if failed_at is None and any(code not in (0, None) for code in codes.values()):
            failed_at = time.monotonic()
        if any(code not in (0, 1, None) for code in codes.values()):
            break  # a rank died: its peers have nothing left to say
        if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
            break
    return codes


def _kill(processes: list) -> None:
    """SIGKILL every rank still running and reap it, a second interrupt held off meanwhile."""
    held = signal.signal(signal.SIGINT, signal.SIG_IGN) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        for process in processes:
            if process.exitcode is None:
                process.kill()
        for process in processes:
            process.join()
    finally:
        if held is not None:
            signal.signal(signal.SIGINT, held)


def _failure(codes: dict[int, int | None], folder: Path) -> str:
    """Which rank brought the run down: one that died (an exit code of its own), else one that
    stopped responding (still running while its peers timed out waiting), else the first that
    raised, with what it said (its last line)."""
    said = {i: (folder / f"rank-{i}.error").read_text() for i in codes if (folder / f"rank-{i}.error").exists()}
    dead = [i for i, code in codes.items() if code not in (0, 1, None)]
    frozen = [i for i, code in codes.items() if code is None and i not in said]
    waited = min((i for i in said if _timed_out(said[i])), default=min(said, default=None))
    words = f"; rank {waited}: {said[waited]}" if said else ""
    if dead:
        return f"rank {dead[0]} {_death(codes[dead[0]])}" + words
    if frozen and any(_timed_out(text) for text in said.values()):  # the rest: connections it closed
        names = ", ".join(str(i) for i in frozen)
        return (f"rank{'s' if len(frozen) > 1 else ''} {names} stopped responding (still running when "
                f"{'its' if len(frozen) == 1 else 'their'} peers timed out waiting)" + words)
    raised = [i for i in sorted(said) if not _timed_out(said[i])] or sorted(said)
    if raised:
        return f"rank {raised[0]} failed: {said[raised[0]]}"
    return "a rank exited: " + ", ".join(f"rank {i} code {code}" for i, code in codes.items() if code)


def _death(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            pass
    return f"exited with code {code}"


def _timed_out(text: str) -> bool:
    """Whether a rank's last words say it gave up waiting on a peer (gloo: "Timed out waiting
    3000ms for recv operation to complete"; the TCP store: "... timeout ...")."""
    return "timed out" in text.lower() or "timeout" in text.lower()


def _die_with(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` (the launcher) dies, even by SIGKILL
    (Linux prctl PR_SET_PDEATHSIG; torch's own wrapper asks for SIGINT, which a rank blocked in
    a collective never acts on). A launcher already gone: leave now."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _entry(rank: int, ranks: int, port: int, backend: str, timeout: datetime.timedelta, worker: Callable, args: tuple,
           folder: str, parent: int) -> None:
    _die_with(parent)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                      RANK=str(rank), WORLD_SIZE=str(ranks), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(ranks))
    code = 1
    try:
        dist.init_process_group(backend, rank=rank, world_size=ranks, timeout=timeout)
        value = worker(*args)
        if rank == 0:
            partial = Path(folder, "rank0.pickle.partial")
            partial.write_bytes(pickle.dumps(value))
            os.replace(partial, Path(folder, "rank0.pickle"))
        dist.barrier()  # nobody tears the group down while a peer still talks to it
        dist.destroy_process_group()
        code = 0
    except Exception as err:  # what this rank says of its failure, for the caller's message
        Path(folder, f"rank-{rank}.error").write_text(f"{type(err).__name__}: {err}".splitlines()[0])
    finally:
        # Leave without running C++ destructors: at interpreter exit gloo's threads sometimes
        # abort the process ("terminate called without an active exception", seen in about one
        # run in fifty), after the work is done and the result written.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
