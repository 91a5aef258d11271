"""The scheduler and simulator never import torch (STYLE.md: torch only in executor/ and the profiler's
measuring parts), and the analytic path never imports SimPy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

MODULES = ["scheduler", "scheduler.placement", "scheduler.layouts", "simulator", "simulator.cli.main",
           "simulator.predict", "simulator.estimator.estimate", "profiler.network.topology", "simulator.study.systems",
           "simulator.cost.memory", "simulator.outputs.render", "profiler.cluster", "profiler.scenarios", "profiler.model",
           "profiler.profile", "profiler.links", "profiler.cli", "executor.cli", "simulator.outputs.validate"]


def run(code: str, tmp_path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that finds a stub ``torch`` first, so an import of torch
    succeeds (even behind try/except ImportError) and shows in sys.modules."""
    stub = tmp_path / "torch"
    stub.mkdir(exist_ok=True)
    (stub / "__init__.py").write_text("STUB = True\n")
    paths = [str(tmp_path)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_the_stub_would_be_seen(tmp_path) -> None:
    result = run("import torch, sys; assert torch.STUB and 'torch' in sys.modules", tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", MODULES)
def test_no_torch(module: str, tmp_path) -> None:
    result = run(f"import {module}, sys; assert 'torch' not in sys.modules, 'torch imported'", tmp_path)
    assert result.returncode == 0, result.stderr


def test_all_together_no_torch(tmp_path) -> None:
    code = "import " + ", ".join(MODULES) + "; import sys; assert 'torch' not in sys.modules"
    result = run(code, tmp_path)
    assert result.returncode == 0, result.stderr


def test_analytic_path_needs_no_simpy(tmp_path) -> None:
    code = ("import sys; from simulator.cli.main import main; "
            "rc = main(['predict', '--case', 'spot', '--layers', '24', '--batch', '1024', '--json', '--quiet']); "
            "assert rc == 0; bad = {'simpy', 'torch'} & set(sys.modules); assert not bad, bad")
    result = run(code, tmp_path)
    assert result.returncode == 0, result.stderr
