"""Shared fixtures: run every test from the project root, and write configs into tmp folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from core.config import load_config
from core.model import DEFAULT_MODEL_DIR
from flows import tasks

ROOT = Path(__file__).resolve().parent.parent

# Minutes each file of real heavy components takes alone on 2 cores (pytest --durations). Under
# `--dist loadfile --no-loadscope-reorder` (pyproject) the two workers take whole files in
# collection order: the longest go first, so that no long file starts near the end and runs
# alone while the other worker idles (xdist's own order, most tests first, put them last).
HEAVY_FILES = {
    "tests/flows/test_flow_training.py": 10,
    "tests/trainers/test_export.py": 7,
    "tests/flows/test_deployment.py": 9,
    "tests/flows/test_prefect_postgres.py": 6.5,
    "tests/flows/test_work_pool.py": 5.5,
    "tests/trainers/test_qlora.py": 7,
    "tests/flows/test_ablate.py": 3.5,
    "tests/flows/test_iterate.py": 6,
    "tests/synthesis/test_synthesis.py": 4,
    "tests/core/test_engine_pool.py": 3,
    "tests/trainers/test_ray_train.py": 2.2,
    "tests/test_reliability.py": 2.5,
    "tests/synthesis/test_balance_synthesis_clinc150.py": 2.5,
    "tests/core/test_model.py": 1,
}


def pytest_collection_modifyitems(items):
    """Longest files first (HEAVY_FILES), the rest in their collection order; a stable sort, the same on every worker."""
    items.sort(key=lambda item: -HEAVY_FILES.get(item.nodeid.split("::")[0], 0))


@pytest.fixture(autouse=True)
def _project_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="session", autouse=True)
def _prefect_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ.setdefault("PREFECT_MEMO_STORE_PATH", str(home / "memo_store.toml"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def curate_steps(config: str | Path, overrides: list[str] | None = None, *, synthesize: bool = False) -> Path:
    """ingest -> clean -> dedupe -> balance [-> synthesize] -> snapshot: the flow's curation tasks as plain
    functions (no Prefect run, so no artifacts), on the config loaded once, as the flow loads it."""
    cfg = load_config(config, list(overrides or []))
    ingested = tasks.ingest.fn(cfg)
    cleaned = tasks.clean.fn(cfg, ingested)
    deduped = tasks.dedupe.fn(cfg, cleaned)
    stages = [ingested, cleaned, deduped, tasks.balance.fn(cfg, deduped)]
    if synthesize:
        stages.append(tasks.synthesize.fn(cfg, stages[-1]))
    return tasks.snapshot.fn(cfg, stages, str(cfg.model.path or DEFAULT_MODEL_DIR)).path


def write_config(tmp_path: Path, data: dict, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def base_config(tmp_path: Path, train: list[str], eval: list[str] | None = None, **sections) -> dict:
    """A classification config over the given files, writing its outputs under tmp_path."""
    cfg = {
        "name": "t",
        "task": {"kind": "classification", "input_field": "text", "output_field": "label", "labels": ["a", "b", "c"]},
        "data": {"train": [{"path": p} for p in train], "eval": [{"path": p} for p in (eval or [])]},
        "output": {"snapshots": str(tmp_path / "snapshots"), "runs": str(tmp_path / "runs")},
        "allow_outside_paths": True,  # the test writes into its tmp folder
        "clean": {"min_chars": 3, "min_words": 1},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg
