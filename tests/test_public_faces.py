"""Each package of the launcher has a public face, its `__init__`'s `__all__`, and a module outside a package
imports from that face only, never from the package's modules (as Optuna's packages are used)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parent.parent / "launcher"


def packages(root: Path) -> list[str]:
    """Every package below the top one, by dotted name."""
    return sorted(
        ".".join(init.parent.relative_to(root.parent).parts)
        for init in root.rglob("__init__.py")
        if init.parent != root
    )


def reaches_inside(root: Path) -> list[str]:
    """`module: import` for each import of a package's module from outside that package (a package's face, its
    subpackages' included, may be imported from anywhere)."""
    faces, found = packages(root), []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported = [node.module]
            elif isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            else:
                continue
            for name in imported:
                if name in faces:
                    continue
                owner = max((package for package in faces if name.startswith(package + ".")), key=len, default=None)
                if owner and not (module == owner or module.startswith(owner + ".")):
                    found.append(f"{module}: {name}")
    return found


def test_every_package_states_its_face():
    for package in packages(LAUNCHER):
        face = importlib.import_module(package)
        assert face.__all__, package
        assert all(hasattr(face, name) for name in face.__all__), package


def test_no_module_reaches_inside_another_package():
    assert reaches_inside(LAUNCHER) == []


def test_a_module_reaching_inside_a_package_is_found(tmp_path: Path):
    root = tmp_path / "launcher"
    (root / "backends").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "backends" / "__init__.py").write_text("from launcher.backends.base import Backend\n")
    (root / "backends" / "base.py").write_text("class Backend: ...\n")
    (root / "steps.py").write_text("from launcher.backends import Backend\nimport launcher.backends.base\n")
    assert reaches_inside(root) == ["launcher.steps: launcher.backends.base"]
