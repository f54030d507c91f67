"""No import cycle inside launcher/: every `import launcher...` counts, at module level, inside a function or
under TYPE_CHECKING, so that a cycle cannot hide behind an import moved into a function."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parent.parent / "launcher"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (importing a submodule imports its packages too)."""
    modules = {module_name(path, root): path for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                for depth in range(1, len(parts) + 1):  # launcher.a.b imports launcher, launcher.a and launcher.a.b
                    imported = ".".join(parts[:depth])
                    if imported in modules and imported != name and not name.startswith(imported + "."):
                        graph[name].add(imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_launcher_has_no_import_cycle():
    graph = import_graph(LAUNCHER)
    assert "launcher.backends.base" in graph and "launcher.tuning" in graph["launcher.backends.base"]
    assert cycles(graph) == []


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path):
    package = tmp_path / "launcher"
    (package / "backends").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "backends" / "__init__.py").write_text("")
    (package / "backends" / "base.py").write_text("def tune():\n    from launcher.tuner import run\n")
    (package / "tuner.py").write_text("from launcher.backends.base import tune\n")
    (package / "alone.py").write_text("import launcher.tuner\n")
    assert cycles(import_graph(package)) == [["launcher.backends.base", "launcher.tuner"]]


def test_the_launcher_and_the_contract_load_neither_torch_nor_the_container_package():
    """The launcher installs without torch: it knows the image through imgclf_contract alone, which imports nothing
    but the standard library. Checked in a fresh interpreter that imports every launcher module."""
    probe = (
        "import importlib, json, pkgutil, sys, launcher, imgclf_contract\n"
        "for module in pkgutil.walk_packages(launcher.__path__, 'launcher.'):\n"
        "    importlib.import_module(module.name)\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules} & {'torch', 'torchvision', 'imgclf'})))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300)
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == []
    contract = Path(__file__).resolve().parent.parent / "container_src" / "contract" / "imgclf_contract"
    outside = (
        {
            target.split(".")[0]
            for module in contract.glob("*.py")
            for node in ast.walk(ast.parse(module.read_text()))
            for target in (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
        }
        - set(sys.stdlib_module_names)
        - {"imgclf_contract", "__future__"}
    )
    assert outside == set()
