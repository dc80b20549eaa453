"""The code's shape is a contract: layering (import-linter), no hidden cycles, short functions and modules."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "agents", "sinks", "sim", "greeks")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450
# numba kernels: one loop body per row, spelled out for the JIT (see greeks/_kernels.py)
LONG_FUNCTIONS_ALLOWED = {("greeks/_kernels.py", "_solve_s_iter")}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_layering_contract_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_function_local_imports_of_the_project() -> None:
    """A function-local import of our own packages would hide a cycle from the layering contract."""
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                module = (sub.module or "") if isinstance(sub, ast.ImportFrom) else (
                    sub.names[0].name if isinstance(sub, ast.Import) else "")
                if module.split(".")[0] in PACKAGES:
                    found.append(f"{path.relative_to(ROOT)}:{sub.lineno} {module}")
    assert not found, found


def test_functions_and_modules_stay_short() -> None:
    long = []
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (rel, node.name) not in LONG_FUNCTIONS_ALLOWED:
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert not long, long


def test_the_repository_carries_the_design_it_cites() -> None:
    """Definitions are cited from docs/design.md, which is in the repository; nothing points outside it.
    (Migrations applied before the document moved in call it DESIGN.md; their text is frozen history.)"""
    assert (ROOT / "docs" / "design.md").is_file()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = []
    for name in tracked:
        if name.startswith("sinks/migrations/") or name in ("tests/test_layering.py", "docs/design.md") or not name.endswith((".py", ".md", ".sql", ".toml", ".yml")):
            continue
        text = (ROOT / name).read_text(errors="replace")
        for marker in ("../shared", "DESIGN.md", "DESIGN \"", "DESIGN:"):
            if marker in text:
                outside.append(f"{name}: {marker}")
    assert not outside, outside
