"""What the command lines' flags accept (`sim`, `executor`), checked where they are read:
argparse value types that refuse a value no run could use (the message names the flag as the
user typed it), and the check of every output path before the work it would wait for."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Callable

from profiler.errors import InputError
from profiler.files import check_folder

# The largest c_dp / c_pp the comm objective takes: 1 PB, a million times GPT3-XL's 5.2 GB of
# gradients. Above it the cost model's coefficients (bytes / bandwidth, summed over a group)
# leave the range the MILP solvers handle (HiGHS fails on 1e308).
MAX_COST_BYTES = 1e15


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def seconds(*, zero: str | None = None) -> Callable[[str], float]:
    """A finite, positive number of seconds; with ``zero``, also 0, which means that."""
    def parse(text: str) -> float:
        value = _number(text)
        if math.isfinite(value) and (value > 0 or (zero is not None and value == 0)):
            return value
        allowed = "positive and finite" + (f", or 0 ({zero})" if zero else "")
        raise argparse.ArgumentTypeError(f"seconds must be {allowed}, got {text!r}")
    return parse


def cost_bytes(text: str) -> float:
    """A byte count of the comm objective: positive, finite, at most MAX_COST_BYTES."""
    value = _number(text)
    if not (math.isfinite(value) and 0 < value <= MAX_COST_BYTES):
        raise argparse.ArgumentTypeError(f"bytes must be positive and at most {MAX_COST_BYTES:g}, got {text!r}")
    return value


def check_png_path(path: Path, flag: str = "--plot") -> None:
    """Before the work: ``path`` can take a PNG (its folder exists, it is no folder, it says .png)."""
    check_folder(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file to write")
    if path.suffix.lower() != ".png":
        raise InputError(f"{flag} {path}: pictures are written as PNG: name the file .png")


def check_outputs(outputs: dict[str, Path | None], pngs: tuple[str, ...] = ()) -> None:
    """Refuse, before the work, an output flag's path that cannot be written: its folder missing
    or read-only, the path a folder or a read-only file, two flags naming one file; the flags in
    ``pngs`` draw a PNG."""
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        if flag in pngs:
            check_png_path(path, flag)
        else:
            check_folder(path)
            if path.is_dir():
                raise InputError(f"{flag} {path}: is a folder, not a file to write")
        if not os.access(path.parent, os.W_OK):
            raise InputError(f"{flag} {path}: cannot write into folder {path.parent}")
        if path.exists() and not os.access(path, os.W_OK):  # write-protected: not ours to replace
            raise InputError(f"{flag} {path}: the file is read-only")
        key = path.resolve()
        if key in seen:
            raise InputError(f"{seen[key]} and {flag} both name {path}: give each its own file")
        seen[key] = flag
