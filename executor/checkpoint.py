"""Checkpoints of a run (`executor run --checkpoint-dir DIR [--every K] [--resume]`).

After every K-th iteration each rank writes its stage's weights and optimizer state to
``DIR/iteration-{i}/rank-{r}.pt`` (a temporary file, then a rename); once every rank has, rank 0
points ``DIR/latest.json`` at that iteration, again by rename. A checkpoint is complete exactly
when ``latest.json`` names it, so a run killed mid-write leaves the last complete one in force
and a half-written file is never read. The data of an iteration depend only on its number and
the seed (executor.model.batch), so a resumed run reaches the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from profiler.errors import InputError
from profiler.files import write_atomic

LATEST = "latest.json"


def save(folder: Path, iteration: int, rank: int, stage: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    step = folder / f"iteration-{iteration}"
    step.mkdir(parents=True, exist_ok=True)
    partial = step / f".rank-{rank}.pt.partial"
    torch.save({"stage": stage.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration}, partial)
    os.replace(partial, step / f"rank-{rank}.pt")
    dist.barrier()  # every rank's file is in place
    if rank == 0:
        write_atomic(folder / LATEST, json.dumps({"iteration": iteration, "ranks": dist.get_world_size()}) + "\n")
    dist.barrier()


def latest(folder: Path, ranks: int) -> int | None:
    """The last complete checkpoint's iteration, or None if there is none."""
    path = folder / LATEST
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        iteration = int(doc["iteration"])
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a checkpoint pointer") from None
    if doc.get("ranks") != ranks:
        raise InputError(f"{path}: a checkpoint of {doc.get('ranks')} ranks; this plan runs {ranks}")
    return iteration


def load(folder: Path, iteration: int, rank: int, stage: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    state = torch.load(folder / f"iteration-{iteration}" / f"rank-{rank}.pt", weights_only=True,
                       map_location=next(stage.parameters()).device)
    stage.load_state_dict(state["stage"])
    optimizer.load_state_dict(state["optimizer"])
