"""The packages' layering, read off every module's imports (docs/architecture.md):

- profiler ← scheduler ← simulator, and the executor beside the simulator: a package imports only
  itself and the packages below it (the executor never imports the simulator, nor it the executor);
- each heavy library only in its edge modules: torch where the profiler measures and in the
  executor, SimPy in the SimPy engine, PuLP in the MILP modules, matplotlib in the drawing ones;
- an import inside a function only of such a library or a module that loads one (to keep
  `sim predict` from loading SimPy, torch or matplotlib it does not use), never to dodge a circle;
- no circle among the modules, counting the imports inside functions.

The checker walks every module of the four packages; the planted trees below show it fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("profiler", "scheduler", "simulator", "executor")
MAY_IMPORT = {"profiler": {"profiler"}, "scheduler": {"profiler", "scheduler"},
              "simulator": {"profiler", "scheduler", "simulator"}, "executor": {"profiler", "scheduler", "executor"}}
# Each heavy library and the modules (a name, or a package ending in ".") that may import it.
EDGES = {
    "torch": ("executor.", "profiler.gpt", "profiler.measure", "profiler.measure_network", "profiler.spawn",
              "profiler.cli"),
    "simpy": ("simulator.engine.",),
    "pulp": ("scheduler.ilp", "scheduler.time_bound", "scheduler.shared_nics", "scheduler.cbc"),
    "highspy": ("scheduler.ilp",),
    "matplotlib": ("simulator.outputs.charts", "simulator.outputs.timeline"),
}


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, module: str, is_package: bool, modules) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function, line) for every import of ``tree``: ``from a import
    b`` imports module a.b where ``modules`` has one, else module a."""
    inner = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             for node in ast.walk(fn) if node is not fn}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        out += [(name, id(node) in inner, node.lineno) for name in names]
    return out


def _allowed(module: str, patterns: tuple[str, ...]) -> bool:
    return any(module.startswith(p) if p.endswith(".") else module == p for p in patterns)


def violations(root: Path) -> list[str]:
    """Every breach of the layering in the packages under ``root``, one line each."""
    modules = {_module_name(path, root): path for package in PACKAGES if (root / package).is_dir()
               for path in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    at_top: dict[str, set[str]] = {name: set() for name in modules}
    found, heavy, lazy = [], set(), []
    for name, path in modules.items():
        for target, inside, line in _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", modules):
            top = target.split(".")[0]
            where = f"{path.relative_to(root)}:{line}"
            if top in PACKAGES:
                if target not in modules:
                    continue  # not one of the packages' modules (a test's stub, say)
                if top not in MAY_IMPORT[name.split(".")[0]]:
                    found.append(f"{where}: {name} imports {target} ({name.split('.')[0]} may import only "
                                 f"{', '.join(sorted(MAY_IMPORT[name.split('.')[0]]))})")
                if target != name:
                    graph[name].add(target)
                    (lazy.append((where, name, target)) if inside else at_top[name].add(target))
            elif top in EDGES:
                if not _allowed(name, EDGES[top]):
                    found.append(f"{where}: {name} imports {top}, which only {', '.join(EDGES[top])} may")
                if not inside:
                    heavy.add(name)
    while True:  # a module that imports a heavy library's module at its top loads the library too
        more = {name for name, targets in at_top.items() if targets & heavy} - heavy
        if not more:
            break
        heavy |= more
    for where, name, target in dict.fromkeys(lazy):
        if target not in heavy:
            found.append(f"{where}: {name} imports {target} inside a function; it loads no heavy library: "
                         "import it at the top")
    found += [f"import circle: {' -> '.join(circle)}" for circle in _circles(graph)]
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected group of modules that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_a_circle(graph, group) for group in groups]


def _a_circle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    members, path = set(group), [group[0]]
    while True:
        step = min(n for n in graph[path[-1]] if n in members)
        if step in path:
            return path[path.index(step):] + [step]
        path.append(step)


def test_the_packages_keep_their_layering() -> None:
    assert violations(ROOT) == []


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize("files,words", [
    ({"executor/run.py": "from simulator import predict\n"}, "executor.run imports simulator"),
    ({"profiler/cluster.py": "import scheduler\n"}, "profiler may import only profiler"),
    ({"scheduler/plan.py": "import torch\n"}, "scheduler.plan imports torch"),
    ({"simulator/predict.py": "import simpy\n"}, "simulator.predict imports simpy"),
    ({"simulator/a.py": "def f():\n    from simulator import b\n", "simulator/b.py": ""},
     "imports simulator.b inside a function"),
    ({"simulator/a.py": "from simulator import b\n", "simulator/b.py": "def f():\n    import simulator.a\n"},
     "import circle: simulator.a -> simulator.b -> simulator.a"),
    ({"scheduler/a.py": "from .b import x\n", "scheduler/b.py": "from scheduler.a import y\n"},
     "import circle: scheduler.a -> scheduler.b -> scheduler.a"),
])
def test_a_planted_bad_import_is_found(tmp_path, files, words) -> None:
    found = violations(_plant(tmp_path, files))
    assert any(words in line for line in found), found


def test_a_lazy_import_of_an_edge_module_is_allowed(tmp_path) -> None:
    root = _plant(tmp_path, {"simulator/engine/__init__.py": "", "simulator/engine/run.py": "import simpy\n",
                             "simulator/predict.py": "def f():\n    from simulator.engine import run\n"})
    assert violations(root) == []
