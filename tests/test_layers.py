"""The import contract: `jobs/` is the data layer, `ray_backfill/` orchestrates it, nothing loops.

Every import statement counts, also one inside a function; only imports under
`if TYPE_CHECKING:` (type hints, never run) are left out of the cycle check.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("jobs", "ray_backfill", "benchmarks")
# The orchestration modules that may talk to Ray or RayDP: the Ray executor, the limiter actor,
# the session builder and the chunk worker (its own Ray driver). The benchmarks start Ray too.
RAY_MODULES = {"ray_backfill.executors.ray", "ray_backfill.limiter", "ray_backfill.sessions", "ray_backfill.slot_master",
               "ray_backfill.worker"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, only for type checking) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for item in child.body:
                    visit_one(item, True)
                for item in child.orelse:
                    visit_one(item, typing_only)
                continue
            visit_one(child, typing_only)

    def visit_one(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, typing_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, typing_only))
            # `from pkg import mod` imports the module pkg.mod when there is one
            found.extend((f"{node.module}.{alias.name}", typing_only) for alias in node.names)
        visit(node, typing_only)

    visit(tree, False)
    return found


def _project_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _project_modules()


def _graph(include_typing: bool) -> dict[str, set[str]]:
    """Project module -> project modules it imports (a submodule's import also runs its packages)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = set()
        for imported, typing_only in _imports(path):
            if typing_only and not include_typing:
                continue
            parts = imported.split(".")
            for i in range(1, len(parts) + 1):
                candidate = ".".join(parts[:i])
                if candidate in MODULES and candidate != name and not name.startswith(candidate + "."):
                    targets.add(candidate)
        graph[name] = targets
    return graph


def test_the_contract_sees_every_module_of_both_layers():
    assert {"jobs.tasks", "jobs.bronze", "jobs.config", "jobs.limits", "ray_backfill.runner", "ray_backfill.request",
            "ray_backfill.loop", "ray_backfill.cli"} <= set(MODULES)
    # an import inside a function counts
    assert "jobs.sources.synthetic" in _graph(False)["jobs.tasks"]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.split(".")[0] == "jobs"))
def test_the_data_layer_imports_neither_ray_nor_raydp_nor_the_orchestration(name):
    bad = sorted({imported for imported, _ in _imports(MODULES[name])
                  if imported.split(".")[0] in ("ray", "raydp", "ray_backfill", "benchmarks")})
    assert not bad, f"{name} (data layer) imports {bad}"


def test_in_the_orchestration_only_the_ray_modules_import_ray():
    users = {name for name, path in MODULES.items() if name.startswith("ray_backfill")
             and any(imported.split(".")[0] in ("ray", "raydp") for imported, _ in _imports(path))}
    assert users <= RAY_MODULES, f"imports ray/raydp outside {sorted(RAY_MODULES)}: {sorted(users - RAY_MODULES)}"


def test_nothing_but_the_benchmarks_imports_the_benchmarks():
    users = {name for name, path in MODULES.items() if not name.startswith("benchmarks")
             and any(imported.split(".")[0] == "benchmarks" for imported, _ in _imports(path))}
    assert not users


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def test_no_module_imports_itself_through_others():
    assert _cycles(_graph(include_typing=False)) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Reading settings is cheap: these modules (and what they import) load none of the heavy libraries.
LIGHT_MODULES = ("jobs.config", "jobs.limits", "ray_backfill.options")
HEAVY = ("numpy", "pandas", "pyspark", "ray", "raydp", "pyarrow")


@pytest.mark.process
@pytest.mark.parametrize("name", LIGHT_MODULES)
def test_reading_settings_imports_nothing_heavy(name):
    code = (f"import {name}, sys; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"import {name} loads {done.stdout.strip()}"
