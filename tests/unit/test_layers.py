"""The architecture holds: pure layers import neither Fabric nor invoke; start-up does not load Fabric."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "tinsnip"
PURE = ["smep.py", "inventory.py", "config.py", "steps.py", "script.py", "render.py", "exports.py",
        "catalog.py", "errors.py", *[f"plans/{p.name}" for p in (PKG / "plans").glob("*.py")]]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", [m for m in PURE if (PKG / m).exists()])
def test_pure_layers_do_not_import_fabric_or_invoke(module):
    assert not imported_modules(PKG / module) & {"fabric", "invoke", "paramiko"}, module


def test_only_remote_imports_fabric():
    users = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if {"fabric", "paramiko"} & imported_modules(p))
    assert set(users) <= {"remote.py", "lab/__init__.py"}, users


def test_task_tree_loads_without_fabric():
    code = "import sys, tinsnip.cli; bad = [m for m in sys.modules if m.split('.')[0] in ('fabric', 'paramiko')]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PKG.parent)
    assert out.stdout.strip() == "[]"
