"""Local ranks for a quick run on one machine (`profiler network --spawn`, `executor run`): N
processes meet on the loopback, run one function, and rank 0's result comes back to the caller.

Rank 0 writes its result to a file (write, then rename) that the caller reads once every rank has
exited: a result sent through a pipe instead would block rank 0 while the caller waits for it to
exit, once the result outgrows the pipe's buffer.
"""

from __future__ import annotations

import datetime
import os
import pickle
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from profiler.errors import InputError

TIMEOUT = datetime.timedelta(minutes=5)  # a rank that waits this long on a peer gives up


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
    """A spawned rank raised or died; the message names the rank and its last words."""


def run_local(worker: Callable[..., Any], ranks: int, backend: str, args: tuple = (),
              timeout: datetime.timedelta = TIMEOUT) -> Any:
    """``worker(*args)`` on ``ranks`` local processes in one process group; rank 0's return value."""
    check_backend(backend, ranks)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tasklet-ranks-") as folder:
        result = Path(folder) / "rank0.pickle"
        context = mp.start_processes(_entry, args=(ranks, port, backend, timeout, worker, args, folder), nprocs=ranks,
                                     start_method="spawn", join=False)
        try:
            while not context.join():
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException):
            raise RankFailed(_failure(context, Path(folder))) from None
        return pickle.loads(result.read_bytes())


def _failure(context, folder: Path) -> str:
    """Which rank brought the run down: one that died (an exit code of its own), else the first
    that raised, with what it said (its last line)."""
    codes = {i: process.exitcode for i, process in enumerate(context.processes)}
    dead = [i for i, code in codes.items() if code not in (0, 1, -signal.SIGTERM, None)]
    said = {i: (folder / f"rank-{i}.error").read_text() for i in codes if (folder / f"rank-{i}.error").exists()}
    if dead:
        return f"rank {dead[0]} exited with code {codes[dead[0]]}" + (
            f"; rank {min(said)}: {said[min(said)]}" if said else "")
    if said:
        return f"rank {min(said)} failed: {said[min(said)]}"
    return "a rank exited: " + ", ".join(f"rank {i} code {code}" for i, code in codes.items() if code)


def _entry(rank: int, ranks: int, port: int, backend: str, timeout: datetime.timedelta, worker: Callable, args: tuple,
           folder: str) -> None:
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
