"""Tasks of the loops built on training: the ablation (what each curation stage buys) and the iterate
rounds (evaluation directs synthesis). Each reads, calls one library function, writes, returns a folder.

    ablation-variant   the train rows after one stage, as a snapshot       (<output.runs>/ablation-variants/)
    ablation-report    every run's evaluation in one report                (<output.runs>/<name>/ablations/<key>/)
    iteration-data     an iterate round's snapshot: the last one's rows + synthetic rows for its weakest classes,
                       labelled by its adapter; the synthesis in a child process (flows/child.py iterate)
    iteration-report   every round's evaluation in one report              (<output.runs>/<name>/iterations/<key>/)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.config import Config, resolve_path
from core.io import atomic_folder
from core.model import model_identity
from core.schema import StageCounts
from core.snapshot import read_manifest, write_snapshot
from core.train_config import ABLATION_VARIANTS
from flows.cache import StageOutput, cached, code_key, content_key, file_hashes
from flows.limits import engine_slot
from flows.logs import stage_logged
from flows.proc import run_job
from flows.tasks import progress_artifact, publish_markdown, repoint, write_stage_snapshot
from synthesis.synthesize import synthesize_stage
from trainers.ablate import ablation_report as report_ablation
from trainers.checker import TunedChecker
from trainers.iterate import iteration_report as report_iteration
from trainers.iterate import plan_round


# -- the ablation: what each curation stage buys -------------------------------------------------
@task(name="ablation-variant", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
@stage_logged
def ablation_variant(config: Config, stages: list[StageOutput], variant: str, snapshot_dir: str, model_dir: str) -> StageOutput:
    """The train rows as they stand after `variant`'s stage (raw: ingest), as a snapshot with the final snapshot's
    eval split, under <output.runs>/ablation-variants/. Content-addressed: a stage that changed no row gives the
    snapshot of the stage before it, and the last stage's is the run's own snapshot (the same id, the same adapter)."""
    root = resolve_path(config.output.runs) / "ablation-variants"
    upto = [s.path for s in stages[: ABLATION_VARIANTS.index(variant) + 1]]
    eval_rows = pl.read_parquet(Path(snapshot_dir) / "eval.parquet", glob=False)
    folder = write_stage_snapshot(config, upto, root, model_dir, eval_rows=eval_rows)
    rows = read_manifest(folder)["rows"]
    return StageOutput("ablation-variant", str(folder), "computed", note=f"{variant}: {folder.name}, train {rows['train']} rows")


@task(name="ablation-report", cache_policy=NO_CACHE)
@stage_logged
def ablation_report(config: Config, runs: list[dict]) -> StageOutput:
    """Every run's evaluation read into one report (trainers/ablate.py): ablation.md, .json, .png, and an artifact."""
    key = content_key({"runs": [{k: str(v) for k, v in r.items()} for r in runs], "code": code_key(report_ablation)}, 12)
    out = resolve_path(config.output.runs) / config.name / "ablations" / key
    with atomic_folder(out, prefix=".tmp-ablation-") as tmp:
        report_ablation(runs, tmp)
        repoint(tmp, out, ("ablation.json", "ablation.md"))
    publish_markdown(config, "ablation", (out / "ablation.md").read_text(), "What each curation stage buys in model quality")
    return StageOutput("ablation-report", str(out), "computed", note=f"{len(runs)} runs: {out / 'ablation.md'}")


# -- iterate: evaluation directs synthesis -------------------------------------------------------
@task(name="iteration-data", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
@stage_logged
def iteration_data(config: Config, iteration: int, last: dict, model_dir: str) -> StageOutput:
    """Round `iteration`'s snapshot: round `last`'s snapshot with synthetic rows for the classes its evaluation
    scored worst, written by the synthesis model and kept where its adapter agrees (flows/child.py iterate).
    The round's tables are a cached stage (07-iterate); the snapshot goes beside the run's, its manifest
    naming the round, the snapshot, adapter and evaluation it came from."""
    templates = sorted(resolve_path(config.synthesis.templates_dir).glob("*.jinja"))
    parts = {
        "iteration": iteration,
        "snapshot": read_manifest(last["snapshot"])["snapshot_id"],
        "adapter": str(last["adapter"]),  # its run folder's name is its content key
        "evaluation": str(last["evaluation"]),
        "iterate": config.iterate.model_dump(mode="json"),
        "synthesis": config.iteration_run(iteration).synthesis.model_dump(mode="json"),
        "task": config.task.model_dump(mode="json"),
        "clean": config.clean.model_dump(mode="json"),
        "dedupe": config.dedupe.model_dump(mode="json"),
        "model": model_identity(config.model.path),
        "engine": config.model.engine.model_dump(mode="json"),
        "templates": file_hashes(templates),
        "plan_code": code_key(plan_round, TunedChecker),
    }

    def compute(out: Path) -> None:
        work = out / "work"
        with engine_slot(config):
            run_job("iterate", {"iteration": iteration, "snapshot": last["snapshot"], "adapter": last["adapter"],
                                "evaluation": last["evaluation"], "out": out}, config, folder=work,
                    what=f"iterate round {iteration}", log=out / "synthesis.log",
                    on_progress=progress_artifact(config, "synthesis"))
        shutil.rmtree(work)

    stage = cached(config, "07-iterate", synthesize_stage, parts, compute)
    prev = read_manifest(last["snapshot"])
    rows = pl.read_parquet(stage.path / "rows.parquet", glob=False)
    counts = StageCounts.from_dict(json.loads((stage.path / "counts.json").read_text()))
    dropped = pl.read_parquet(stage.path / "dropped.parquet", glob=False)
    totals = json.loads((stage.path / "synthesis.json").read_text())
    folder = write_snapshot(
        resolve_path(config.output.snapshots),
        config.name,
        train=rows.filter(pl.col("split") == "train"),
        eval=rows.filter(pl.col("split") == "eval"),
        rejected=pl.concat([pl.read_parquet(Path(last["snapshot"]) / "rejected.parquet", glob=False), dropped],
                           how="diagonal_relaxed"),
        quarantine=pl.read_parquet(Path(last["snapshot"]) / "quarantine.parquet", glob=False),
        stages=[*map(StageCounts.from_dict, prev["stages"]), replace(counts, stage=f"iterate-{iteration}")],
        config=prev["config"],
        config_hash=prev["config_hash"],
        inputs=prev["inputs"],
        extra={"model": model_dir, "synthesis": totals, "balance_plan": prev.get("balance_plan"),
               "iteration": {"round": iteration, "from_snapshot": prev["snapshot_id"], "adapter": str(last["adapter"]),
                             "evaluation": str(last["evaluation"]), "stage": stage.folder,
                             "plan": pl.read_parquet(stage.path / "plan.parquet", glob=False).to_dicts()}},
        code_key=code_key(synthesize_stage, plan_round),
    )
    return StageOutput("iteration-data", str(folder), stage.cache,
                       note=f"round {iteration}: {totals.get('kept', 0)} of {totals.get('requested', 0)} rows asked for, "
                            f"train {read_manifest(folder)['rows']['train']} rows")


@task(name="iteration-report", cache_policy=NO_CACHE)
@stage_logged
def iteration_report(config: Config, rounds: list[dict], stopped: str | None) -> StageOutput:
    """Every round's evaluation in one report (trainers/iterate.py): iteration.md, .json, .png, and an artifact."""
    key = content_key({"rounds": [{k: str(v) for k, v in r.items()} for r in rounds], "code": code_key(report_iteration)}, 12)
    out = resolve_path(config.output.runs) / config.name / "iterations" / key
    with atomic_folder(out, prefix=".tmp-iteration-") as tmp:
        report_iteration(rounds, tmp, stopped=stopped)
        repoint(tmp, out, ("iteration.json", "iteration.md"))
    publish_markdown(config, "iteration", (out / "iteration.md").read_text(), "Evaluation-directed synthesis, round by round")
    return StageOutput("iteration-report", str(out), "computed", note=f"{len(rounds)} rounds: {out / 'iteration.md'}")
