"""The `curate-and-train` Prefect flow: thin tasks that pass paths between stages.

    prepare-model -> ingest -> clean -> dedupe -> balance -> synthesize -> snapshot -> diff
        [-> review gate] -> format-check -> train -> evaluate       (with train.enabled)

    .venv/bin/curate run --config configs/banking77.yaml      # in-process, ephemeral Prefect API
    .venv/bin/curate serve                                    # a deployment on a local Prefect server
    prefect deployment run curate-and-train/default --watch

Each task wraps one step of curate/pipeline.py (read, call the stage, write, return
the folder). Stage folders are content-addressed, so an unchanged stage is a cache hit
and a killed run resumes from the last completed stage (training from its last
checkpoint, curate/training.py). Retries only where IO or a model can flake (reading
sources, preparing the model, synthesis, training, evaluation, writing the snapshot);
deterministic filters are never retried.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.input import RunInput

from curate import pipeline, training
from curate.config import load_config, resolve_path
from curate.diff import diff_markdown
from curate.model import resolve_model
from curate.report import class_mix_chart, class_rows, funnel_rows, manifest_markdown
from curate.review import record_review, review_status
from curate.snapshot import read_manifest


def artifact_key(name: str, what: str) -> str:
    """A Prefect artifact key for a dataset's artifact: Prefect takes lowercase letters, digits and
    dashes only, and a dataset name may also hold `_` and `.` (banking77_full)."""
    return re.sub(r"[^a-z0-9-]", "-", f"{name}-{what}".lower())


def with_runner(flow_obj, config_path: str, overrides: list[str] | None = None):
    """The flow with the task runner the config names (Ray through prefect-ray, or the default)."""
    cfg = load_config(config_path, list(overrides or []))
    if cfg.runner.kind != "ray":
        return flow_obj
    from prefect_ray import RayTaskRunner

    init = {"include_dashboard": False, **({"num_cpus": cfg.runner.num_cpus} if cfg.runner.num_cpus else {})}
    return flow_obj.with_options(task_runner=RayTaskRunner(address=cfg.runner.address, init_kwargs=None if cfg.runner.address else init))


class ReviewDecision(RunInput):
    """What a reviewer answers when the run pauses for review (Prefect UI or CLI)."""

    approve: bool
    reviewer: str
    note: str = ""


class ReviewRejected(RuntimeError):
    """The curated snapshot was rejected (or not yet approved): nothing is trained on it."""


@task(name="prepare-model", retries=1, retry_delay_seconds=5, timeout_seconds=900)
def prepare_model(config_path: str, overrides: list[str]) -> str:
    config = load_config(config_path, overrides)
    return str(resolve_model(config.model.path))


@task(name="ingest", retries=2, retry_delay_seconds=2)
def ingest(config_path: str, overrides: list[str]) -> str:
    return str(pipeline.step_ingest(config_path, overrides))


@task(name="clean")
def clean(config_path: str, overrides: list[str], prev: str) -> str:
    return str(pipeline.step_clean(config_path, overrides, Path(prev)))


@task(name="shard-rows", retries=1, retry_delay_seconds=2)
def shard_rows(config_path: str, overrides: list[str], prev: str, n: int) -> list[str]:
    return [str(p) for p in pipeline.split_shards(config_path, overrides, Path(prev), n)]


@task(name="clean-shard")
def clean_shard(config_path: str, overrides: list[str], shard: str) -> str:
    return str(pipeline.step_clean_shard(config_path, overrides, Path(shard)))


@task(name="merge-clean")
def merge_clean(config_path: str, overrides: list[str], prev: str, shard_dirs: list[str]) -> str:
    return str(pipeline.merge_clean(config_path, overrides, Path(prev), [Path(d) for d in shard_dirs]))


@task(name="dedupe")
def dedupe(config_path: str, overrides: list[str], prev: str) -> str:
    return str(pipeline.step_dedupe(config_path, overrides, Path(prev)))


@task(name="balance")
def balance(config_path: str, overrides: list[str], prev: str) -> str:
    return str(pipeline.step_balance(config_path, overrides, Path(prev)))


@task(name="synthesize", retries=1, retry_delay_seconds=10, timeout_seconds=6 * 3600)
def synthesize(config_path: str, overrides: list[str], prev: str) -> str:
    folder = pipeline.step_synthesize(config_path, overrides, Path(prev))
    totals = (Path(folder) / "synthesis.json").read_text()
    create_markdown_artifact(key=artifact_key(load_config(config_path, overrides).name, "synthesis"), markdown=f"```json\n{totals}\n```\n",
                             description="Synthesis totals per class and reason")
    return str(folder)


@task(name="snapshot", retries=1, retry_delay_seconds=2)
def snapshot(config_path: str, overrides: list[str], stage_dirs: list[str], model_dir: str) -> str:
    folder = pipeline.step_snapshot(config_path, overrides, [Path(d) for d in stage_dirs], extra={"model": model_dir})
    manifest = read_manifest(folder)
    create_table_artifact(
        key=artifact_key(manifest["name"], "funnel"), table=funnel_rows(manifest), description="Rows per stage and reason"
    )
    create_markdown_artifact(key=artifact_key(manifest["name"], "snapshot"), markdown=manifest_markdown(manifest, folder))
    create_table_artifact(key=artifact_key(manifest["name"], "class-mix"), table=class_rows(manifest), description="Train rows per class")
    create_markdown_artifact(key=artifact_key(manifest["name"], "class-mix-chart"), markdown=class_mix_chart(manifest),
                             description="Train rows per class before and after curation")
    return str(folder)


@task(name="diff")
def diff(config_path: str, overrides: list[str], snapshot_dir: str) -> str:
    """The dataset diff of this snapshot against its predecessor, as a Prefect artifact."""
    config = load_config(config_path, overrides)
    markdown = diff_markdown(snapshot_dir, root=resolve_path(config.output.snapshots))
    create_markdown_artifact(key=artifact_key(config.name, "diff"), markdown=markdown, description="Dataset diff against the previous snapshot")
    return markdown


def review_gate(snapshot_dir: str, *, timeout_s: int) -> dict:
    """Wait for a reviewer's decision on the snapshot; return the recorded review.

    A decision already in the manifest (`curate review approve|reject`) is used as is.
    On a Prefect server the run pauses and asks for a ReviewDecision (UI or CLI); with
    the ephemeral in-process API nobody could answer, so the run stops and says how to
    approve (a re-run then passes the gate, every stage a cache hit).
    """
    status = review_status(snapshot_dir)
    if status is None:
        if not os.environ.get("PREFECT_API_URL"):
            raise ReviewRejected(
                f"snapshot {snapshot_dir} awaits review: run `curate review approve {snapshot_dir} --by NAME` "
                "(or reject), then run again"
            )
        from prefect.flow_runs import pause_flow_run

        get_run_logger().info("paused for review of %s: approve or reject in the Prefect UI", snapshot_dir)
        answer = pause_flow_run(wait_for_input=ReviewDecision, timeout=timeout_s)
        record_review(snapshot_dir, "approve" if answer.approve else "reject", by=answer.reviewer, note=answer.note or None)
        status = review_status(snapshot_dir)
    if status["decision"] != "approved":
        raise ReviewRejected(f"snapshot {snapshot_dir} was rejected by {status['by']}: {status.get('note') or 'no note'}")
    return status


@task(name="format-check")
def format_check(config_path: str, overrides: list[str], snapshot_dir: str, model_dir: str) -> dict:
    """Every train and eval row in the training format, token by token; a violation fails the run."""
    from trainers.format import FormatViolationError

    report = training.step_format_check(config_path, overrides, snapshot_dir, model_dir)
    create_markdown_artifact(key=artifact_key(load_config(config_path, overrides).name, "format-check"),
                             markdown=training.format_markdown(report), description="Token-level format check before training")
    if report["refusal"]:
        raise FormatViolationError(report["refusal"])
    return report


@task(name="train", retries=1, retry_delay_seconds=10, timeout_seconds=48 * 3600)
def train(config_path: str, overrides: list[str], snapshot_dir: str, model_dir: str) -> str:
    """QLoRA/LoRA training; a retry (or a re-run) resumes from the latest checkpoint."""
    adapter = training.step_train(config_path, overrides, snapshot_dir, model_dir)
    create_table_artifact(key=artifact_key(load_config(config_path, overrides).name, "training"), table=training.training_rows(adapter),
                          description=f"Training of {adapter}")
    return str(adapter)


@task(name="evaluate", retries=1, retry_delay_seconds=10, timeout_seconds=6 * 3600)
def evaluate(config_path: str, overrides: list[str], adapter_dir: str, snapshot_dir: str) -> str:
    """The adapter against the base model on the eval split (vLLM, LoRA requests)."""
    folder = training.step_evaluate(config_path, overrides, adapter_dir, snapshot_dir)
    name = load_config(config_path, overrides).name
    create_table_artifact(key=artifact_key(name, "evaluation"), table=training.evaluation_rows(folder),
                          description=f"Evaluation on the eval split ({folder})")
    return str(folder)


@flow(name="curate-and-train", log_prints=True)
def curate_and_train(
    config: str = "configs/banking77.yaml",
    overrides: list[str] | None = None,
    require_review: bool = False,
    review_timeout_s: int = 86_400,
) -> dict:
    """Curate the task data into a versioned snapshot, then (train.enabled) train and evaluate an adapter on it.

    Returns the paths: snapshot, and with training adapter and evaluation (report folder).
    """
    overrides = list(overrides or [])
    cfg = load_config(config, overrides)  # fail fast, before any stage runs
    pipeline.CACHE_EVENTS.clear()
    model_dir = prepare_model(config, overrides)
    ingested = ingest(config, overrides)
    if cfg.runner.kind == "ray":  # row shards go to the workers; the merge equals one pass
        shards = shard_rows(config, overrides, ingested, cfg.runner.shards)
        futures = clean_shard.map(unmapped(config), unmapped(overrides), shards)
        cleaned = merge_clean(config, overrides, ingested, [f.result() for f in futures])
    else:
        cleaned = clean(config, overrides, ingested)
    deduped = dedupe(config, overrides, cleaned)
    balanced = balance(config, overrides, deduped)
    synthesized = synthesize(config, overrides, balanced)
    stage_dirs = [ingested, cleaned, deduped, balanced, synthesized]
    folder = snapshot(config, overrides, stage_dirs, model_dir)
    diff(config, overrides, folder)
    result = {"snapshot": folder, "snapshot_id": Path(folder).name}
    record = pipeline.write_run_record(cfg, folder, stage_dirs)
    if require_review:
        review_gate(folder, timeout_s=review_timeout_s)
    if cfg.train.enabled:
        format_check(config, overrides, folder, model_dir)
        result["adapter"] = train(config, overrides, folder, model_dir)
        if cfg.train.evaluate:
            result["evaluation"] = evaluate(config, overrides, result["adapter"], folder)
        pipeline.write_run_record(cfg, folder, stage_dirs, record=record, extra=result)
    create_markdown_artifact(key=artifact_key(cfg.name, "outputs"), markdown="\n".join(f"- **{k}**: `{v}`" for k, v in result.items()) + "\n",
                             description="Where this run's snapshot and adapter are")
    return result
