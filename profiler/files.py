"""Reading and writing the user's files: a JSON file read is one InputError line on any problem;
an output file is written whole or not at all, nothing half-written left behind on any failure."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from profiler.errors import InputError


def read_json(path: str | os.PathLike[str], kind: str) -> Any:
    """The JSON document in ``path``; ``kind`` names it in messages ("cluster file")."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{path}: cannot read {kind} ({err.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None


def check_folder(path: str | os.PathLike[str]) -> Path:
    """The output path, once its folder is known to exist: check before long work, not after."""
    target = Path(path)
    if not target.parent.is_dir():
        raise InputError(f"{target}: folder {target.parent} does not exist")
    return target


def write_atomic(path: str | os.PathLike[str], text: str | bytes) -> None:
    """A temporary file in the same folder, then a rename over ``path``; ``text`` as UTF-8, or
    ``bytes`` as they are. A path that cannot be written (no such folder, a directory, no
    permission) is the user's InputError."""
    target = check_folder(path)
    folder = target.parent
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise InputError(f"{target}: cannot write ({err.strerror})") from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(text if isinstance(text, bytes) else text.encode("utf-8"))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as an ordinary open() would have made it
        os.replace(temporary, target)
    except OSError as err:
        Path(temporary).unlink(missing_ok=True)
        raise InputError(f"{target}: cannot write ({err.strerror})") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
