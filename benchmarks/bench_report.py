"""How long the what-if tools take (issue 6's targets): `sim report --all` (< 5 min) and the
notebook notebooks/what_if.ipynb run headless top to bottom (< 2 min). Run as
``python benchmarks/bench_report.py [report|notebook]`` on an otherwise idle machine; prints one
line per measurement."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def report() -> None:
    for jobs in (os.cpu_count() or 1, 1):
        with tempfile.TemporaryDirectory() as scratch:
            begin = time.perf_counter()
            subprocess.run([sys.executable, "-m", "simulator.cli.main", "report", "--all", "-o", str(Path(scratch) / "r"),
                            "--jobs", str(jobs), "--quiet"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            print(f"sim report --all --jobs {jobs}: {time.perf_counter() - begin:.1f} s", flush=True)


def notebook() -> None:
    import nbclient
    import nbformat

    path = ROOT / "notebooks" / "what_if.ipynb"
    book = nbformat.read(path, as_version=4)
    begin = time.perf_counter()
    nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    print(f"notebooks/what_if.ipynb, top to bottom (kernel start included): {time.perf_counter() - begin:.1f} s")


if __name__ == "__main__":
    which = sys.argv[1:] or ["report", "notebook"]
    for name in which:
        {"report": report, "notebook": notebook}[name]()
