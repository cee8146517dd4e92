"""The `curate-and-train` Prefect flow: the stages in order, each a task that passes folders on.

    prepare-model -> ingest -> clean -> dedupe -> balance -> synthesize -> snapshot -> diff
        [-> review gate] -> format-check -> train -> evaluate       (with train.enabled)
        -> export -> parity                                          (with export.enabled)
        -> per round: iteration-data -> train -> evaluate; iteration-report          (with iterate.enabled)
        -> per variant: ablation-variant, per seed: train -> evaluate; ablation-report   (with ablate.enabled)

    .venv/bin/curate run --config configs/banking77.yaml      # in-process, ephemeral Prefect API
    .venv/bin/curate serve                                    # a deployment on a local Prefect server
    prefect deployment run curate-and-train/default --watch

The flow loads and validates the config once and hands the resolved, frozen Config to
every task (flows/tasks.py). Stage folders are content-addressed (flows/cache.py), so an
unchanged stage is a cache hit and a killed run resumes from the last completed stage
(training from its last checkpoint). Each task returns where its output is and whether
it was a hit; the run record (data/runs/<name>/<stamp>/run.json) lists them.
"""

import datetime as dt
import uuid
from pathlib import Path

from prefect import flow, get_run_logger, unmapped
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.settings import PREFECT_API_URL

from core.config import Config, load_config, resolve_path
from core.config_form import ConfigSettings, settings_overrides
from core.io import write_json
from core.review import record_review, review_status
from core.snapshot import read_manifest
from flows import experiment_tasks, tasks
from flows.cache import StageOutput
from flows.logs import run_log
from trainers.ablate import read_report
from trainers.iterate import stop_reason


class ReviewDecision(RunInput):
    """What a reviewer answers when the run pauses for review (Prefect UI or CLI)."""

    approve: bool
    reviewer: str
    note: str = ""


class ReviewRejected(RuntimeError):
    """The curated snapshot was rejected (or not yet approved): nothing is trained on it."""


class NothingToTrain(ValueError):
    """The snapshot's train split is empty (every row quarantined or filtered, or empty sources): no trainer starts."""


def refuse_empty_train(snapshot_dir: str) -> None:
    """Stop before training on a snapshot with no train row, saying why (a trainer fails later, on StopIteration)."""
    manifest = read_manifest(snapshot_dir)
    rows = manifest["rows"]
    if not rows["train"]:
        raise NothingToTrain(
            f"snapshot {snapshot_dir} has no train rows ({rows['quarantine']} quarantined, {rows['rejected']} rejected: "
            f"`curate snapshots show {snapshot_dir}` says at which stage and why); nothing to train on. Fix the data "
            "or the config, or run with --no-train")


def review_gate(snapshot_dir: str, *, timeout_s: int) -> dict:
    """Wait for a reviewer's decision on the snapshot; return the recorded review.

    A decision already in the manifest (`curate review approve|reject`) is used as is.
    On a Prefect server the run asks for a ReviewDecision (UI or CLI): a deployment's run is
    suspended (Prefect's suspend_flow_run: no process waits), any other run pauses; with
    the ephemeral in-process API nobody could answer, so the run stops and says how to
    approve (a re-run then passes the gate, every stage a cache hit).
    """
    status = review_status(snapshot_dir)
    if status is None:
        if not PREFECT_API_URL.value():  # Prefect's setting: the environment, a profile, or pyproject's [tool.prefect]
            raise ReviewRejected(
                f"snapshot {snapshot_dir} awaits review: run `curate review approve {snapshot_dir} --by NAME` "
                "(or reject), then run again"
            )
        run = FlowRunContext.get().flow_run
        get_run_logger().info("waiting for review of %s: approve or reject in the Prefect UI", snapshot_dir)
        if run.deployment_id is not None:
            # A deployment's run is suspended: its process ends and no worker is held while a reviewer takes
            # days; resumed, the run starts again, every stage a cache hit, and this call returns the answer.
            answer = suspend_flow_run(wait_for_input=ReviewDecision, timeout=timeout_s, key="review")
        else:  # a run outside a deployment cannot be started again: it waits in its process
            answer = pause_flow_run(wait_for_input=ReviewDecision, timeout=timeout_s, key="review")
        record_review(snapshot_dir, "approve" if answer.approve else "reject", by=answer.reviewer, note=answer.note or None)
        status = review_status(snapshot_dir)
    if status["decision"] != "approved":
        raise ReviewRejected(f"snapshot {snapshot_dir} was rejected by {status['by']}: {status.get('note') or 'no note'}")
    return status


def run_record_path(config: Config) -> Path:
    """data/runs/<name>/<stamp>-<id>/run.json: this run's own record (its run.log beside it)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return resolve_path(config.output.runs) / config.name / f"{stamp}-{uuid.uuid4().hex[:6]}" / "run.json"


def write_run_record(config: Config, snapshot: str, stages: list[StageOutput], model_stages: list[StageOutput] = (),
                     *, record: Path, extra: dict | None = None) -> Path:
    """The run record: which stage folders this run used, hit or computed, and each stage's own time.

    Written once curation is done and rewritten (same file) when training adds its paths.
    """
    return write_json(
        {
            "snapshot": snapshot,
            "stages": [{"stage": s.stage, "folder": s.folder, "cache": s.cache, "seconds": s.seconds} for s in stages],
            **({"model_stages": [{"stage": s.stage, "cache": s.cache, "seconds": s.seconds} for s in model_stages]}
               if extra else {}),
            **(extra or {}),
        },
        record,
    )


def ablate(cfg: Config, stages: list[StageOutput], snapshot_dir: str, model_dir: str) -> list[StageOutput]:
    """The recipe trained with each seed on each variant's rows (the data after that stage) and evaluated on the
    final eval split; the last output is the report (trainers/ablate.py). Variants with the same rows share runs."""
    outputs, runs = [], []
    for variant in cfg.ablate.ordered_variants():
        outputs.append(data := experiment_tasks.ablation_variant(cfg, stages, variant, snapshot_dir, model_dir))
        refuse_empty_train(data.folder)
        for seed in cfg.ablate.seeds or [cfg.train.seed]:
            run_cfg = cfg.ablation_run(seed)
            outputs.append(adapter := tasks.train(run_cfg, data.folder, model_dir))
            outputs.append(evaluation := tasks.evaluate(run_cfg, adapter, data.folder))
            runs.append({"variant": variant, "seed": seed, "snapshot": data.folder, "adapter": adapter.folder,
                         "evaluation": evaluation.folder})
    outputs.append(experiment_tasks.ablation_report(cfg, runs))
    return outputs


def iterate(cfg: Config, snapshot_dir: str, model_dir: str, adapter: StageOutput, evaluation: StageOutput) -> list[StageOutput]:
    """Rounds of evaluation-directed synthesis after the run's own training (round 1): each round's data, its
    training and evaluation; stops after iterate.rounds or at the first round that does not gain; the last
    output is the report (trainers/iterate.py)."""
    rounds = [{"iteration": 1, "snapshot": snapshot_dir, "adapter": adapter.folder, "evaluation": evaluation.folder}]
    scores, outputs, stopped = [macro_f1(evaluation)], [], None
    for iteration in range(2, cfg.iterate.rounds + 1):
        outputs.append(data := experiment_tasks.iteration_data(cfg, iteration, rounds[-1], model_dir))
        outputs.append(adapter := tasks.train(cfg, data.folder, model_dir))
        outputs.append(evaluation := tasks.evaluate(cfg.iteration_eval(), adapter, data.folder))
        manifest = read_manifest(data.folder)
        rounds.append({"iteration": iteration, "snapshot": data.folder, "adapter": adapter.folder,
                       "evaluation": evaluation.folder, "plan": str(Path(manifest["iteration"]["stage"]) / "plan.parquet"),
                       "synthesis": manifest["synthesis"]})
        scores.append(macro_f1(evaluation))
        if stopped := stop_reason(scores, min_gain=cfg.iterate.min_gain):
            break
    outputs.append(experiment_tasks.iteration_report(cfg, rounds, stopped))
    return outputs


def macro_f1(evaluation: StageOutput) -> float:
    return read_report(evaluation.folder)["systems"]["tuned"]["macro_f1"]


@flow(name="curate-and-train", log_prints=True)
def curate_and_train(
    config: str = "configs/banking77.yaml",
    overrides: list[str] | None = None,
    require_review: bool = False,
    review_timeout_s: int = 86_400,
    settings: ConfigSettings | None = None,
) -> dict:
    """Curate the task data into a versioned snapshot, then (train.enabled) train and evaluate an adapter on it.

    Returns the paths: snapshot, and with training adapter and evaluation (report folder),
    `record` (the run record, with run.log beside it) and `stages`: each stage's
    [name, cache, seconds] ("hit", "computed", ...; its own time), in the order they ran.

    Args:
        config: the pipeline config file (YAML), relative to the project folder.
        overrides: settings over the file's, as `key.path=value` (as `curate run --set`); applied after `settings`.
        require_review: stop for a reviewer's approval of the curated snapshot before training.
        review_timeout_s: how long the run waits for that review, in seconds.
        settings: settings over the file's, field by field: every section of the config with its types, bounds and
            descriptions (core/config_form.py); an empty field keeps the file's value.
    """
    # once per run; every task gets the resolved config
    cfg = load_config(config, [*settings_overrides(settings), *(overrides or [])])
    record = run_record_path(cfg)
    with run_log(record.parent / "run.log"):
        model_dir = tasks.prepare_model(cfg)
        ingested = tasks.ingest(cfg)
        if cfg.runner.kind == "ray":  # row shards go to the workers; the merge equals one pass
            shards = tasks.shard_rows(cfg, ingested, cfg.runner.shards)
            cleaned = tasks.merge_clean(cfg, ingested, [f.result() for f in tasks.clean_shard.map(unmapped(cfg), shards)])
        else:
            cleaned = tasks.clean(cfg, ingested)
        deduped = tasks.dedupe(cfg, cleaned)
        balanced = tasks.balance(cfg, deduped)
        synthesized = tasks.synthesize(cfg, balanced)
        stages = [ingested, cleaned, deduped, balanced, synthesized]
        snapshot = tasks.snapshot(cfg, stages, model_dir)
        compared = tasks.diff(cfg, snapshot)
        folder = snapshot.folder
        result = {"snapshot": folder, "snapshot_id": Path(folder).name, "record": str(record)}
        write_run_record(cfg, folder, stages, record=record)
        model_stages: list[StageOutput] = []
        if cfg.train.enabled:
            refuse_empty_train(folder)  # before a reviewer is asked to look at it
        if require_review:
            review_gate(folder, timeout_s=review_timeout_s)
        if cfg.train.enabled:
            model_stages.append(tasks.format_check(cfg, folder, model_dir))
            model_stages.append(adapter := tasks.train(cfg, folder, model_dir))
            result["adapter"] = adapter.folder
            if cfg.train.evaluate:
                model_stages.append(evaluation := tasks.evaluate(cfg, adapter, folder))
                result["evaluation"] = evaluation.folder
                if cfg.export.enabled:
                    model_stages.append(exported := tasks.export(cfg, adapter, evaluation))
                    result["export"] = exported.folder
                    if cfg.export.parity:
                        model_stages.append(checked := tasks.parity(cfg, exported, evaluation, folder))
                        result["parity"] = checked.folder
        if cfg.iterate.enabled:
            model_stages += iterate(cfg, folder, model_dir, adapter, evaluation)
            result["iteration"] = model_stages[-1].folder
        if cfg.ablate.enabled:
            model_stages += ablate(cfg, stages, folder, model_dir)
            result["ablation"] = model_stages[-1].folder
        if model_stages:
            write_run_record(cfg, folder, stages, [s for s in model_stages if s.stage != "format-check"], record=record,
                             extra=result)
        tasks.publish_markdown(cfg, "outputs", "\n".join(f"- **{k}**: `{v}`" for k, v in result.items()) + "\n",
                               "Where this run's snapshot and adapter are")
    return {**result, "stages": [[s.stage, s.cache, s.seconds] for s in [*stages, snapshot, compared, *model_stages]]}
