"""Shared fixtures: run every test from the project root, and write configs into tmp folders."""

from __future__ import annotations

import os

# The suite runs two workers on two cores, so two OpenMP pools (an engine's worker, a training) often
# share them, and libgomp's default spins a waiting thread on a core the other pool needs. Passive waits:
# a Ray-engine evaluation and a Ray training side by side, 196 s -> 165 s (bench/bench_omp_wait.py).
# Set before torch loads in this process, and inherited by every process the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# vLLM's CPU build reserves gpu_memory_utilization x total RAM per engine and refuses to start where that
# much is not free, as beside a test running two engines it can be. A fixed 2 GiB KV cache (~45 k tokens of
# the bundled model in float32, ~90 k in bf16) is more than any test's batch needs, on any machine.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

from core.config import load_config  # noqa: E402
from core.model import DEFAULT_MODEL_DIR  # noqa: E402
from flows import tasks  # noqa: E402

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
