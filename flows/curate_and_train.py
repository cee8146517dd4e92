"""The `curate-and-train` Prefect flow: thin tasks that pass paths between stages.

    .venv/bin/curate run --config configs/banking77.yaml      # in-process, ephemeral Prefect API

Each task wraps one step of curate/pipeline.py (read, call the stage, write, return
the folder). Retries only where IO can flake (reading sources, preparing the model,
writing the snapshot); deterministic filters are never retried.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from curate import pipeline
from curate.config import load_config
from curate.model import resolve_model
from curate.config import resolve_path
from curate.diff import diff_markdown
from curate.report import class_rows, funnel_rows, manifest_markdown
from curate.snapshot import read_manifest


@task(name="prepare-model", retries=1, retry_delay_seconds=5)
def prepare_model(config_path: str, overrides: list[str]) -> str:
    config = load_config(config_path, overrides)
    return str(resolve_model(config.model.path))


@task(name="ingest", retries=2, retry_delay_seconds=2)
def ingest(config_path: str, overrides: list[str], run_dir: str) -> str:
    return str(pipeline.step_ingest(config_path, overrides, Path(run_dir)))


@task(name="clean")
def clean(config_path: str, overrides: list[str], prev: str, run_dir: str) -> str:
    return str(pipeline.step_clean(config_path, overrides, Path(prev), Path(run_dir)))


@task(name="dedupe")
def dedupe(config_path: str, overrides: list[str], prev: str, run_dir: str) -> str:
    return str(pipeline.step_dedupe(config_path, overrides, Path(prev), Path(run_dir)))


@task(name="balance")
def balance(config_path: str, overrides: list[str], prev: str, run_dir: str) -> str:
    return str(pipeline.step_balance(config_path, overrides, Path(prev), Path(run_dir)))


@task(name="snapshot", retries=1, retry_delay_seconds=2)
def snapshot(config_path: str, overrides: list[str], stage_dirs: list[str], model_dir: str) -> str:
    folder = pipeline.step_snapshot(config_path, overrides, [Path(d) for d in stage_dirs], extra={"model": model_dir})
    manifest = read_manifest(folder)
    create_table_artifact(
        key=f"{manifest['name']}-funnel", table=funnel_rows(manifest), description="Rows per stage and reason"
    )
    create_markdown_artifact(key=f"{manifest['name']}-snapshot", markdown=manifest_markdown(manifest, folder))
    create_table_artifact(key=f"{manifest['name']}-class-mix", table=class_rows(manifest), description="Train rows per class")
    return str(folder)


@task(name="diff")
def diff(config_path: str, overrides: list[str], snapshot_dir: str) -> str:
    """The dataset diff of this snapshot against its predecessor, as a Prefect artifact."""
    config = load_config(config_path, overrides)
    markdown = diff_markdown(snapshot_dir, root=resolve_path(config.output.snapshots))
    create_markdown_artifact(key=f"{config.name}-diff", markdown=markdown, description="Dataset diff against the previous snapshot")
    return markdown


@flow(name="curate-and-train", log_prints=True)
def curate_and_train(config: str = "configs/banking77.yaml", overrides: list[str] | None = None) -> str:
    """Ingest, clean, dedupe and balance the task data, then write a versioned snapshot; returns its folder."""
    overrides = list(overrides or [])
    cfg = load_config(config, overrides)  # fail fast, before any stage runs
    run_dir = str(pipeline.new_run_dir(cfg))
    model_dir = prepare_model(config, overrides)
    ingested = ingest(config, overrides, run_dir)
    cleaned = clean(config, overrides, ingested, run_dir)
    deduped = dedupe(config, overrides, cleaned, run_dir)
    balanced = balance(config, overrides, deduped, run_dir)
    folder = snapshot(config, overrides, [ingested, cleaned, deduped, balanced], model_dir)
    diff(config, overrides, folder)
    return folder
