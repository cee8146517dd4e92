"""The flow's tasks: one per stage. Each reads its input folder, calls one library function, writes
its own content-addressed folder (flows/cache.py) and returns a StageOutput (folder, hit or computed).

    data/cache/<name>/01-ingest/<key>/      rows.parquet  quarantine.parquet  counts.json  key.json
    data/cache/<name>/02-clean/<key>/       rows.parquet  dropped.parquet     counts.json  key.json
    data/cache/<name>/03-dedupe/<key>/      ...
    data/cache/<name>/04-balance/<key>/     ... plan.parquet
    data/cache/<name>/05-synthesize/<key>/  ... synthesis.json  synthesis.log
    <train.output_dir>/<name>/<snapshot id>-<method>-<key>/   format_check.json  adapter/  eval-<key>/

Every task gets the run's resolved Config (loaded once by the flow). The heavy stages
(synthesis with a model, training, evaluation) run their library function in a child
process (flows/proc.py, flows/child.py). Each task publishes its Prefect artifacts when
it runs under Prefect; called as a plain function (`ingest.fn(config)`, the tests) it
publishes none. Retries only where IO or a model can flake (reading sources, preparing
the model, synthesis, training, evaluation, writing the snapshot); deterministic
filters are never retried.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

import polars as pl
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from core.config import Config, resolve_path
from core.diff import DiffError, diff_report
from core.diff_render import nothing_to_compare, render_markdown
from core.ingest import ingest as ingest_rows
from core.io import atomic_folder, folder_lock, write_json, write_table, write_text
from core.model import model_identity, resolve_model
from core.progress import ProgressLine
from core.report import class_mix_chart, class_rows, funnel_rows, manifest_markdown
from core.schema import StageCounts, count_stage, empty_dropped
from core.snapshot import file_sha256, input_hashes, read_manifest, write_snapshot
from filters.balance import balance as balance_rows
from filters.clean import clean as clean_rows
from filters.dedupe import dedupe as dedupe_rows
from filters.near_dup_ray import ray_links_fn
from flows.cache import StageOutput, cached, code_key, content_key, file_hashes, write_rows_stage
from flows.limits import engine_slot
from flows.logs import stage_logged
from flows.proc import run_job
from flows.runner import ray_environ
from synthesis.synthesize import synthesis_requested, synthesize_stage
from trainers.evaluate import evaluate as evaluate_adapter
from trainers.export import EXPORT_META, export_model
from trainers.format_check import FormatViolationError, format_markdown
from trainers.format_check import format_check as check_snapshot_format
from trainers.parity import parity as check_parity
from trainers.qlora import ADAPTER_DIR, META_FILE, latest_checkpoint
from trainers.qlora import train as train_adapter
from trainers.summary import evaluation_rows, training_rows

# Training settings that change how fast a run goes, not what it learns (left out of the run folder's key).
SPEED_ONLY = {"cpu_threads", "cpu_malloc_mmap_threshold", "output_dir", "logging_steps", "save_total_limit", "worker_cpus",
              "max_failures"}
# Left out of the run folder's key too: whether format violations are refused changes nothing a finished run
# learned (a refused run has no adapter), so an ablation's run on clean rows is the flow's own run.
NOT_IN_RUN_KEY = SPEED_ONLY | {"allow_format_violations"}


# -- artifacts --------------------------------------------------------------------------------
def artifact_key(name: str, what: str) -> str:
    """A Prefect artifact key for a dataset's artifact: Prefect takes lowercase letters, digits and
    dashes only, and a dataset name may also hold `_` and `.` (banking77_full)."""
    return re.sub(r"[^a-z0-9-]", "-", f"{name}-{what}".lower())


def _in_prefect_run() -> bool:
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def publish_markdown(config: Config, what: str, markdown: str, description: str | None = None) -> None:
    if _in_prefect_run():
        create_markdown_artifact(key=artifact_key(config.name, what), markdown=markdown, description=description)


def publish_table(config: Config, what: str, table: list[dict], description: str | None = None) -> None:
    if _in_prefect_run():
        create_table_artifact(key=artifact_key(config.name, what), table=table, description=description)


def progress_artifact(config: Config, what: str) -> Callable[[ProgressLine], None] | None:
    """A Prefect progress artifact for a long stage, moved by each progress line (None outside a Prefect run)."""
    if not _in_prefect_run():
        return None
    artifact = create_progress_artifact(0.0, key=artifact_key(config.name, f"{what}-progress"),
                                        description=f"{what}: waiting for the first progress line")

    def update(line: ProgressLine) -> None:
        update_progress_artifact(artifact, 100.0 * line.fraction, description=f"{line.what}: {line.done}/{line.total} {line.unit}")

    return update


def _publish_counts(config: Config, out: StageOutput) -> None:
    """A data stage's outcome, per reason: rows in, kept, and each filter or quarantine reason."""
    counts = StageCounts.from_dict(json.loads((out.path / "counts.json").read_text()))
    rows = [{"outcome": "rows in", "rows": counts.rows_in}, {"outcome": "kept", "rows": counts.kept}]
    rows += [{"outcome": f"filtered: {k}", "rows": v} for k, v in sorted(counts.filtered.items())]
    rows += [{"outcome": f"quarantined: {k}", "rows": v} for k, v in sorted(counts.quarantined.items())]
    publish_table(config, counts.stage, rows, description=f"{counts.stage}: rows per outcome ({out.cache}, {out.folder})")


# -- the data stages --------------------------------------------------------------------------
def progress_bar() -> Progress:
    """A rich progress bar on stderr; silent when stderr is not a terminal (CI, logs)."""
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=not console.is_terminal, transient=False,
    )


@task(name="prepare-model", retries=1, retry_delay_seconds=5, timeout_seconds=900, cache_policy=NO_CACHE)
def prepare_model(config: Config) -> str:
    """The model folder (the bundled model prepared, or verified, first)."""
    return str(resolve_model(config.model.path))


@task(name="ingest", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
@stage_logged
def ingest(config: Config) -> StageOutput:
    """Every source into one typed table; unusable records to quarantine (core/ingest.py)."""
    labels_file = [resolve_path(config.task.labels_file)] if config.task.labels_file else []
    parts = {
        "inputs": input_hashes(config),
        "task": config.task.model_dump(mode="json"),
        "data": config.data.model_dump(mode="json"),
        "ingest": config.ingest.model_dump(mode="json"),
        "labels_file": file_hashes(labels_file),
    }

    def compute(out: Path) -> None:
        with progress_bar() as bar:
            tasks: dict[str, object] = {}

            def report(source: str, advance: int, total: int | None) -> None:
                if source not in tasks:
                    tasks[source] = bar.add_task(f"ingest {Path(source).name}", total=total)
                bar.update(tasks[source], advance=advance)

            rows, quarantine, counts = ingest_rows(config, progress=report)
            for task_id in tasks.values():
                bar.update(task_id, completed=bar.tasks[task_id].total)
        write_table(rows, out / "rows.parquet")
        write_table(quarantine, out / "quarantine.parquet")
        write_json(counts.to_dict(), out / "counts.json")

    out = cached(config, "01-ingest", ingest_rows, parts, compute)
    _publish_counts(config, out)
    return out


def _clean_parts(config: Config) -> dict:
    blocklists = [resolve_path(f) for f in config.clean.blocklist.files]
    return {"clean": config.clean.model_dump(mode="json"), "task": config.task.model_dump(mode="json"),
            "blocklists": file_hashes(blocklists)}


@task(name="clean", cache_policy=NO_CACHE)
@stage_logged
def clean(config: Config, prev: StageOutput) -> StageOutput:
    """Normalize, redact PII, drop what fails quality, blocklist and label checks (filters/clean.py)."""
    def compute(out: Path) -> None:
        write_rows_stage(out, *clean_rows(pl.read_parquet(prev.path / "rows.parquet", glob=False), config))

    out = cached(config, "02-clean", clean_rows, {"prev": prev.path.name, **_clean_parts(config)}, compute)
    _publish_counts(config, out)
    return out


# Sharded clean, for task runners that spread work over machines (Ray): clean is row-wise,
# so cleaning row shards and concatenating them in order gives the same bytes as one pass,
# and the merged folder has the same cache key as `clean`'s.
@task(name="shard-rows", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def shard_rows(config: Config, prev: StageOutput, n: int) -> list[str]:
    """The previous stage's rows as n contiguous shards (their paths)."""
    rows = pl.read_parquet(prev.path / "rows.parquet", glob=False)
    folder = resolve_path(config.output.cache) / config.name / "shards" / f"{prev.path.name}-{n}"
    size = max(1, -(-rows.height // n))
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.parquet"
        if not path.exists():
            write_table(rows.slice(i * size, size), path)
        paths.append(str(path))
    return paths


@task(name="clean-shard", cache_policy=NO_CACHE)
def clean_shard(config: Config, shard: str) -> StageOutput:
    """Clean one shard (cached by the shard's content like any stage)."""
    def compute(out: Path) -> None:
        write_rows_stage(out, *clean_rows(pl.read_parquet(shard, glob=False), config))

    return cached(config, "02-clean-shards", clean_rows, {**_clean_parts(config), "shard": file_sha256(shard)}, compute)


@task(name="merge-clean", cache_policy=NO_CACHE)
@stage_logged
def merge_clean(config: Config, prev: StageOutput, shards: list[StageOutput]) -> StageOutput:
    """Concatenate cleaned shards, in order, into the folder `clean` would have written."""
    def compute(out: Path) -> None:
        rows = pl.read_parquet(prev.path / "rows.parquet", glob=False)
        kept = pl.concat([pl.read_parquet(s.path / "rows.parquet", glob=False) for s in shards])
        dropped = pl.concat([pl.read_parquet(s.path / "dropped.parquet", glob=False) for s in shards])
        write_rows_stage(out, kept, dropped, count_stage("clean", rows, kept, dropped))

    out = cached(config, "02-clean", clean_rows, {"prev": prev.path.name, **_clean_parts(config)}, compute)
    _publish_counts(config, out)
    return out


@task(name="dedupe", cache_policy=NO_CACHE)
@stage_logged
def dedupe(config: Config, prev: StageOutput) -> StageOutput:
    """Exact, then near duplicates and eval contamination (filters/dedupe.py); on Ray, the near-dup
    passes run as Ray tasks."""
    links_fn = ray_links_fn(config.runner.shards) if config.runner.kind == "ray" else None

    def compute(out: Path) -> None:
        write_rows_stage(out, *dedupe_rows(pl.read_parquet(prev.path / "rows.parquet", glob=False), config, links_fn=links_fn))

    out = cached(config, "03-dedupe", dedupe_rows, {"prev": prev.path.name, "dedupe": config.dedupe.model_dump(mode="json")},
                 compute)
    _publish_counts(config, out)
    return out


@task(name="balance", cache_policy=NO_CACHE)
@stage_logged
def balance(config: Config, prev: StageOutput) -> StageOutput:
    """The class mix moved toward its target, majority classes capped; the synthesis budget (filters/balance.py)."""
    def compute(out: Path) -> None:
        write_rows_stage(out, *balance_rows(pl.read_parquet(prev.path / "rows.parquet", glob=False), config))

    parts = {"prev": prev.path.name, "balance": config.balance.model_dump(mode="json"), "seed": config.seed,
             "labels": config.label_set()}
    out = cached(config, "04-balance", balance_rows, parts, compute)
    _publish_counts(config, out)
    return out


@task(name="synthesize", retries=1, retry_delay_seconds=10, timeout_seconds=6 * 3600, cache_policy=NO_CACHE)
@stage_logged
def synthesize(config: Config, prev: StageOutput) -> StageOutput:
    """The balance plan's deficits filled with synthetic rows (synthesis/synthesize.py).

    With something to generate the stage runs in a child process (its output in the stage
    folder's synthesis.log); otherwise in this one, where no model starts.
    """
    templates = sorted(resolve_path(config.synthesis.templates_dir).glob("*.jinja"))
    parts = {
        "prev": prev.path.name,
        "synthesis": config.synthesis.model_dump(mode="json"),
        "task": config.task.model_dump(mode="json"),
        "clean": config.clean.model_dump(mode="json"),
        "dedupe": config.dedupe.model_dump(mode="json"),
        "seed": config.seed,
        "model": model_identity(config.model.path),
        "engine": config.model.engine.model_dump(mode="json"),
        "templates": file_hashes(templates),
    }

    def compute(out: Path) -> None:
        plan = pl.read_parquet(prev.path / "plan.parquet", glob=False)
        if synthesis_requested(plan, config):
            work = out / "work"
            with engine_slot(config):  # one of this machine's model-engine slots (flows/limits.py)
                run_job("synthesize", {"rows": prev.path / "rows.parquet", "plan": prev.path / "plan.parquet", "out": out},
                        config, folder=work, what="synthesis", log=out / "synthesis.log",
                        on_progress=progress_artifact(config, "synthesis"), env=ray_environ())
            shutil.rmtree(work)
        else:
            kept, dropped, counts, totals = synthesize_stage(pl.read_parquet(prev.path / "rows.parquet", glob=False), plan, config)
            write_rows_stage(out, kept, dropped, counts)
            write_json(totals, out / "synthesis.json")

    out = cached(config, "05-synthesize", synthesize_stage, parts, compute)
    _publish_counts(config, out)
    publish_markdown(config, "synthesis", f"```json\n{(out.path / 'synthesis.json').read_text()}\n```\n",
                     "Synthesis totals per class and reason")
    return out


def write_stage_snapshot(config: Config, folders: list[Path], root: Path, model_dir: str, *,
                         eval_rows: pl.DataFrame | None = None) -> Path:
    """The stage folders, in order, gathered into one snapshot under root (core/snapshot.py): the last folder's
    rows, every folder's dropped rows, the first's quarantine. `eval_rows` replaces the last folder's eval split
    (an ablation variant keeps the final snapshot's, so that every variant is scored on the same rows)."""
    final = pl.read_parquet(folders[-1] / "rows.parquet", glob=False)
    # Synthetic rows and their rejects carry provenance columns real rows lack (null there).
    dropped = [pl.read_parquet(d / "dropped.parquet", glob=False) for d in folders if (d / "dropped.parquet").exists()]
    extra: dict = {"model": model_dir}
    synthesis = [json.loads((d / "synthesis.json").read_text()) for d in folders if (d / "synthesis.json").exists()]
    if synthesis:
        extra["synthesis"] = synthesis[-1]
    plans = [d / "plan.parquet" for d in folders if (d / "plan.parquet").exists()]
    return write_snapshot(
        root,
        config.name,
        train=final.filter(pl.col("split") == "train"),
        eval=final.filter(pl.col("split") == "eval") if eval_rows is None else eval_rows,
        rejected=pl.concat(dropped, how="diagonal_relaxed") if dropped else empty_dropped(),
        quarantine=pl.read_parquet(folders[0] / "quarantine.parquet", glob=False),
        stages=[StageCounts.from_dict(json.loads((d / "counts.json").read_text())) for d in folders],
        config=config.model_dump(mode="json", exclude={"train", "ablate", "iterate"}),  # the adapter records its own
        config_hash=config.digest(),
        inputs=input_hashes(config),
        extra=extra,
        ingested=pl.read_parquet(folders[0] / "rows.parquet", columns=["split", "label"], glob=False),
        plan=pl.read_parquet(plans[-1], glob=False) if plans else None,
        code_key=code_key(ingest_rows, clean_rows, dedupe_rows, balance_rows, synthesize_stage),
    )


@task(name="snapshot", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
@stage_logged
def snapshot(config: Config, stages: list[StageOutput], model_dir: str) -> StageOutput:
    """The stage folders gathered into one immutable, content-addressed snapshot (core/snapshot.py);
    a hit when a snapshot of the same content was there already."""
    root = resolve_path(config.output.snapshots)
    there = {p.name for p in (root / config.name).iterdir()} if (root / config.name).is_dir() else set()
    folder = write_stage_snapshot(config, [s.path for s in stages], root, model_dir)
    manifest = read_manifest(folder)
    publish_table(config, "funnel", funnel_rows(manifest), "Rows per stage and reason")
    publish_markdown(config, "snapshot", manifest_markdown(manifest, folder))
    publish_table(config, "class-mix", class_rows(manifest), "Train rows per class")
    publish_markdown(config, "class-mix-chart", class_mix_chart(manifest), "Train rows per class before and after curation")
    return StageOutput("snapshot", str(folder), "hit" if folder.name in there else "computed")


@task(name="diff", cache_policy=NO_CACHE)
@stage_logged
def diff(config: Config, snapshot: StageOutput) -> StageOutput:
    """The dataset diff of this snapshot against its predecessor (core/diff.py), as markdown (a Prefect artifact)."""
    root = resolve_path(config.output.snapshots)
    try:
        report = diff_report(None, snapshot.folder, root=root)
    except DiffError as exc:  # the dataset's first snapshot
        publish_markdown(config, "diff", nothing_to_compare(exc), "Dataset diff")  # the reason escaped: it names paths
        return StageOutput("diff", snapshot.folder, "computed", note=f"nothing to compare: {exc}")
    publish_markdown(config, "diff", render_markdown(report), "Dataset diff against the previous snapshot")
    t = report["totals"]
    return StageOutput("diff", snapshot.folder, "computed",
                       note=f"against {report['a']['id']}: {t['added']} rows added, {t['removed']} removed, "
                            f"{t['changed']} changed, {t['label_changed']} relabelled")


# -- the model stages -------------------------------------------------------------------------
def train_run_dir(config: Config, snapshot_dir: str | Path) -> Path:
    """The run folder for training this config's model on this snapshot, keyed like every stage folder:
    the snapshot id, the training settings (not the speed-only ones), the base model, the code."""
    tc = config.train.trainer_config()
    parts = {
        "snapshot": read_manifest(snapshot_dir)["snapshot_id"],
        # where training ran is part of the key only on Ray (its workers each see a share of every batch)
        "train": tc.model_dump(mode="json", exclude=NOT_IN_RUN_KEY | ({"runner", "workers"} if tc.runner == "local" else set())),
        "model": model_identity(config.model.path),
        "code": code_key(train_adapter),
        # the prompt-format template's content, not only its path
        "format_template": file_sha256(resolve_path(tc.format.template)) if tc.format.template else None,
    }
    return resolve_path(tc.output_dir) / config.name / f"{parts['snapshot']}-{tc.method}-{content_key(parts, 12)}"


@task(name="format-check", cache_policy=NO_CACHE)
@stage_logged
def format_check(config: Config, snapshot_dir: str, model_dir: str) -> StageOutput:
    """Every train and eval row in the training format, token by token (trainers/format_check.py).

    A violation fails the run before training (unless train.allow_format_violations); the
    report is kept in the run folder either way.
    """
    tc = config.train.trainer_config()
    path = train_run_dir(config, snapshot_dir) / "format_check.json"
    # same snapshot, format settings and template, tokenizer, code (the run folder's key); a refusal is
    # checked again: cheap, and the user is fixing it
    if path.is_file() and not json.loads(path.read_text())["refusal"]:
        out = StageOutput("format-check", str(path), "hit")
    else:
        checked = check_snapshot_format(snapshot_dir, model_dir, tc, config.task)
        report = {**checked.to_dict(), "refusal": None}
        if not checked.ok and not tc.allow_format_violations:
            report["refusal"] = (checked.summary(limit=5) + "\nTraining refused: fix train.format or set "
                                 f"train.allow_format_violations=true. Full list: {path}")
        write_json(report, path)
        out = StageOutput("format-check", str(path), "computed")
    report = json.loads(path.read_text())
    publish_markdown(config, "format-check", format_markdown(report), "Token-level format check before training")
    if report["refusal"]:
        raise FormatViolationError(report["refusal"])
    return out


@task(name="train", retries=1, retry_delay_seconds=10, timeout_seconds=48 * 3600, cache_policy=NO_CACHE)
@stage_logged
def train(config: Config, snapshot_dir: str, model_dir: str) -> StageOutput:
    """QLoRA/LoRA training in a child process (trainers/qlora.py); a retry (or a re-run) resumes from
    the latest checkpoint in the run folder. Returns the adapter folder."""
    run_dir = train_run_dir(config, snapshot_dir)
    adapter = run_dir / ADAPTER_DIR
    # another run training the same key (same config and snapshot, at once): wait for it, then take its adapter
    with folder_lock(run_dir, resolve_path(config.train.trainer_config().output_dir)):
        if (adapter / META_FILE).is_file():
            out = StageOutput("train", str(adapter), "hit")
        else:
            resumed = latest_checkpoint(run_dir) if run_dir.exists() else None
            with engine_slot(config):
                run_job("train", {"snapshot": snapshot_dir, "model": model_dir, "out": run_dir}, config, folder=run_dir,
                        what="training", log=run_dir / "train.log", on_progress=progress_artifact(config, "training"),
                        env=ray_environ())  # train.runner ray: the workers go on the cluster the task runs on
            out = StageOutput("train", str(adapter), f"resumed from {resumed.name}" if resumed else "computed")
    publish_table(config, "training", training_rows(adapter), f"Training of {adapter}")
    return out


def repoint(tmp: Path, out: Path, names: tuple[str, ...]) -> None:
    """Reports written in a temporary folder name files in it: point them at the final folder."""
    for name in names:
        write_text((tmp / name).read_text().replace(str(tmp), str(out)), tmp / name)


@task(name="evaluate", retries=1, retry_delay_seconds=10, timeout_seconds=6 * 3600, cache_policy=NO_CACHE)
@stage_logged
def evaluate(config: Config, adapter: StageOutput, snapshot_dir: str) -> StageOutput:
    """The adapter against the base model on the eval split (trainers/evaluate.py, vLLM), in a child
    process; returns the report folder."""
    t = config.train
    settings = {"baseline": t.eval_baseline, "shots": t.eval_shots, "max_rows": t.eval_max_rows, "guided": t.eval_guided,
                **({"merged": True} if t.eval_merged else {}),  # absent when off: earlier evaluations keep their key
                **({"label_probs": True} if config.label_probs else {}),
                "base_guided": t.eval_baseline_guided,
                "seed": config.seed, "engine": config.model.engine.model_dump(mode="json"),
                "code": code_key(evaluate_adapter),
                "adapter": json.loads((adapter.path / META_FILE).read_text()).get("global_step")}
    out = adapter.path.parent / f"eval-{content_key(settings, 12)}"
    # the same evaluation in another run: wait, then a hit
    with folder_lock(out, resolve_path(config.train.trainer_config().output_dir)):
        result = StageOutput("evaluate", str(out), "hit") if (out / "report.json").is_file() else None
        if result is None:
            with atomic_folder(out, prefix=".tmp-eval-") as tmp, engine_slot(config):
                work = tmp / "work"
                run_job("evaluate", {"adapter": adapter.path, "snapshot": snapshot_dir, "out": tmp}, config, folder=work,
                        what="evaluation", log=out.parent / "evaluate.log",
                        on_progress=progress_artifact(config, "evaluation"), env=ray_environ())
                shutil.rmtree(work)
                write_json(settings, tmp / "settings.json")
                repoint(tmp, out, ("report.json", "report.md"))
            result = StageOutput("evaluate", str(out), "computed")
    publish_table(config, "evaluation", evaluation_rows(out), f"Evaluation on the eval split ({out})")
    return result


@task(name="export", retries=1, retry_delay_seconds=10, timeout_seconds=6 * 3600, cache_policy=NO_CACHE)
@stage_logged
def export(config: Config, adapter: StageOutput, evaluation: StageOutput) -> StageOutput:
    """The evaluated adapter merged into its base, a plain model folder (trainers/export.py), in a child
    process; returns the folder, beside the adapter, keyed by the evaluation and the export code."""
    key = content_key({"evaluation": evaluation.path.name, "dtype": config.model.engine.dtype, "code": code_key(export_model)}, 12)
    out = adapter.path.parent / f"export-{key}"
    with folder_lock(out, resolve_path(config.train.trainer_config().output_dir)):
        if (out / EXPORT_META).is_file():
            result = StageOutput("export", str(out), "hit")
        else:
            work = out.parent / f".work-{out.name}"
            run_job("export", {"adapter": adapter.path, "evaluation": evaluation.path, "out": out}, config, folder=work,
                    what="export", log=out.parent / "export.log")
            shutil.rmtree(work, ignore_errors=True)
            result = StageOutput("export", str(out), "computed")
    publish_markdown(config, "export", f"Merged model: `{out}` (model card: `{out / 'README.md'}`)\n", "The exported model")
    return result


@task(name="parity", retries=0, timeout_seconds=6 * 3600, cache_policy=NO_CACHE)
@stage_logged
def parity(config: Config, exported: StageOutput, evaluation: StageOutput, snapshot_dir: str) -> StageOutput:
    """Every serving path of the export against the evaluation (trainers/parity.py), in a child process;
    fails the run when a path answers otherwise. Returns the report folder."""
    e = config.export
    settings = {"paths": list(e.paths), "min_agreement": e.min_agreement, "seed": config.seed,
                "engine": config.model.engine.model_dump(mode="json"), "code": code_key(check_parity)}
    out = exported.path.parent / f"{exported.path.name}-parity-{content_key(settings, 12)}"
    with folder_lock(out, resolve_path(config.train.trainer_config().output_dir)):
        if (out / "parity.json").is_file():
            result = StageOutput("parity", str(out), "hit")
        else:
            with atomic_folder(out, prefix=".tmp-parity-") as tmp, engine_slot(config):
                work = tmp / "work"
                run_job("parity", {"export": exported.path, "evaluation": evaluation.path, "snapshot": snapshot_dir,
                                   "out": tmp}, config, folder=work, what="parity", log=out.parent / "parity.log",
                        on_progress=progress_artifact(config, "parity"))
                shutil.rmtree(work)
                repoint(tmp, out, ("parity.json", "parity.md"))
            result = StageOutput("parity", str(out), "computed")
    report = json.loads((out / "parity.json").read_text())
    publish_markdown(config, "parity", (out / "parity.md").read_text(), "Every serving path against the evaluation")
    if not report["passed"]:
        failed = [f"{name} {100 * p['agreement']:.1f} % ({p['prompts_not_as_trained']} prompts not as trained)"
                  for name, p in report["paths"].items() if not p["passed"]]
        raise ParityFailed(f"the exported model does not answer as evaluated on: {', '.join(failed)}; the rows: {out / 'parity.md'}")
    return result


class ParityFailed(RuntimeError):
    """A serving path of the exported model answers otherwise than the evaluation (or is prompted otherwise)."""
