"""Checkpoints of a run (`executor run --checkpoint-dir DIR [--every K] [--resume]`).

After every K-th iteration each rank writes its stage's weights and optimizer state to
``DIR/iteration-{i}/rank-{r}.pt`` (a temporary file, then a rename); once every rank has, rank 0
points ``DIR/latest.json`` at that iteration, again by rename. A checkpoint is complete exactly
when ``latest.json`` names it, so a run killed mid-write leaves the last complete one in force
and a half-written file is never read. The data of an iteration depend only on its number and
the seed (executor.model.batch), so a resumed run reaches the weights of an uninterrupted one.

``latest.json`` also holds the plan's fingerprint (scheduler.plan.Plan.fingerprint): a resume
checks, before any rank starts, that the pointer reads, that every file it names is there, and
that the checkpoint is this plan's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from profiler.errors import InputError
from profiler.files import write_atomic
from scheduler.plan import Plan

LATEST = "latest.json"


def save(folder: Path, iteration: int, rank: int, stage: torch.nn.Module, optimizer: torch.optim.Optimizer,
         plan: str) -> None:
    """This rank's checkpoint of ``iteration``; ``plan`` is the plan's fingerprint."""
    step = folder / f"iteration-{iteration}"
    step.mkdir(parents=True, exist_ok=True)
    partial = step / f".rank-{rank}.pt.partial"
    torch.save({"stage": stage.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration}, partial)
    os.replace(partial, step / f"rank-{rank}.pt")
    dist.barrier()  # every rank's file is in place
    if rank == 0:
        write_atomic(folder / LATEST, json.dumps({"iteration": iteration, "ranks": dist.get_world_size(),
                                                      "plan": plan}) + "\n")
    dist.barrier()


def latest(folder: Path, plan: Plan) -> int | None:
    """The last complete checkpoint's iteration, or None if there is none; InputError if
    ``latest.json`` does not read, names a file that is missing, or belongs to another plan."""
    path = folder / LATEST
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        iteration, ranks = int(doc["iteration"]), doc["ranks"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a checkpoint pointer (truncated or not written by `executor run`)") from None
    if ranks != plan.placement.device_count:
        raise InputError(f"{path}: a checkpoint of {ranks} ranks; plan {plan.placement.config} runs "
                         f"{plan.placement.device_count}")
    if doc.get("plan") != plan.fingerprint():
        raise InputError(f"{path}: a checkpoint of another plan (its fingerprint differs from this plan's)")
    names = [f"iteration-{iteration}/rank-{rank}.pt" for rank in range(ranks)]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise InputError(f"{path}: names iteration {iteration}, but {folder / missing[0]} is missing"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return iteration


def load(folder: Path, iteration: int, rank: int, stage: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    state = torch.load(folder / f"iteration-{iteration}" / f"rank-{rank}.pt", weights_only=True,
                       map_location=next(stage.parameters()).device)
    stage.load_state_dict(state["stage"])
    optimizer.load_state_dict(state["optimizer"])
