"""The one content-addressed cache of the flow's stage outputs, keyed by inputs, settings and code.

    out = cached(config, "03-dedupe", dedupe, {"prev": prev.name, "dedupe": ...}, compute)
    out.folder, out.cache                 # data/cache/<name>/03-dedupe/<key>/, "hit" or "computed"
    code_key(train)                       # the code a stage's output depends on

A stage's key hashes what it reads (content hashes, or the upstream folder's key), its
settings, and its code: `code_key(fn)` hashes the source of the module that defines the
stage function and of every module of this project it imports, followed transitively
through the import statements (read from the files, nothing is imported). A renamed
module, or an edit to any function a stage imports, gives a new key, so a stale output
is never reused; code the stage does not import (the CLI, the reports) leaves it alone.

A folder under its key is always complete: it is filled under a temporary name and
renamed into place (core.io.atomic_folder), and it counts as done once its marker file
(`counts.json` for the data stages) exists. A killed run therefore resumes after the
last stage that completed. Two runs of the same config at once compute each key once:
a lock per key (under the cache's `.locks/`, core.io.folder_lock) makes the second wait for
the first and take its folder as a hit, and a folder that is complete is never
replaced, so no run reads a folder another is removing. Every task returns a StageOutput, so the flow (and the run
record) knows which stages were hits, wherever the task ran (Ray workers included).
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import polars as pl

import core
from core.config import Config, resolve_path
from core.io import atomic_folder, folder_lock, write_json, write_table
from core.schema import StageCounts
from core.snapshot import file_sha256

PROJECT_ROOT = Path(core.__file__).resolve().parent.parent


@dataclass(frozen=True)
class StageOutput:
    """What a stage's task returns: its folder, and whether it was a cache hit."""

    stage: str
    folder: str
    cache: str  # "hit", "computed", or "resumed from checkpoint-N" (training)
    seconds: float | None = None  # the stage's own time (flows.logs.stage_logged)
    note: str | None = None  # what the stage found, where no file of its folder says it (the diff)

    @property
    def path(self) -> Path:
        return Path(self.folder)


def _module_file(name: str, root: Path) -> Path | None:
    """The source file of module `name` under `root` (a package's __init__.py), or None when it is not there."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement of the file may name (`from a import b`: a and a.b)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package upwards
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def code_modules(module: str, *, root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """`module` and every module under `root` it imports, transitively: {module name: source file}."""
    found: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = _module_file(name, root)
        if path is None:  # not this project's (the standard library, polars, torch, ...)
            continue
        found[name] = path
        todo += [n for n in _imported_names(path, name) if n not in found]
        # importing a.b runs a/__init__.py too
        todo += [name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)]
    return dict(sorted(found.items()))


@lru_cache(maxsize=None)
def _module_key(module: str, root: Path) -> str:
    h = hashlib.sha256()
    for name, path in code_modules(module, root=root).items():
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def code_key(*fns: Callable, root: Path = PROJECT_ROOT) -> str:
    """The code of the stage functions: their modules and everything of this project they import.

    Computed once per process for each module (a long-lived server re-reads after a restart)."""
    keys = sorted({_module_key(fn.__module__, root) for fn in fns})
    return keys[0] if len(keys) == 1 else hashlib.sha256("".join(keys).encode()).hexdigest()[:16]


def content_key(parts: dict, length: int = 16) -> str:
    """sha256 of the JSON of `parts` (sorted keys): the same inputs, settings and code give the same key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:length]


def file_hashes(paths: list[Path]) -> dict[str, str]:
    return {str(p): file_sha256(p) for p in paths}


def write_rows_stage(out: Path, kept: pl.DataFrame, dropped: pl.DataFrame, counts: StageCounts,
                     plan: pl.DataFrame | None = None) -> None:
    """What a rows stage's folder holds: rows.parquet (kept), dropped.parquet, [plan.parquet,] and counts.json,
    the marker `cached` looks for (the task's process and the synthesis child write the same layout)."""
    write_table(kept, out / "rows.parquet")
    write_table(dropped, out / "dropped.parquet")
    if plan is not None:
        write_table(plan, out / "plan.parquet")
    write_json(counts.to_dict(), out / "counts.json")


def cached(config: Config, stage: str, fn: Callable, parts: dict, compute: Callable[[Path], None], *,
           marker: str = "counts.json") -> StageOutput:
    """Run `compute(folder)` unless a complete folder for the same key exists; return where it is.

    The key covers `parts` (the stage's inputs and settings), the stage name and the code of
    `fn`, the library function the stage calls. `compute` fills a temporary folder that
    is renamed into place once it returns: a folder under its key is always complete.
    """
    parts = {**parts, "stage": stage, "code": code_key(fn)}
    root = resolve_path(config.output.cache)
    out = root / config.name / stage / content_key(parts)
    complete = lambda folder: (folder / marker).is_file()  # noqa: E731
    if complete(out):
        return StageOutput(stage, str(out), "hit")
    with folder_lock(out, root):  # another run computing the same key: wait for it
        if complete(out):
            return StageOutput(stage, str(out), "hit")
        with atomic_folder(out, keep=complete) as tmp:  # replaces an incomplete leftover (no marker)
            compute(tmp)
            write_json(parts, tmp / "key.json")
    return StageOutput(stage, str(out), "computed")
