"""The pipeline's stages as path-in, path-out steps: what each Prefect task calls.

Each step reads the previous stage's folder, calls the stage function over polars
frames (curate/ingest.py, curate/stages.py), writes its outputs into its own
content-addressed folder, and returns that folder:

    data/cache/<name>/01-ingest/<key>/   rows.parquet  quarantine.parquet  counts.json  key.json
    data/cache/<name>/02-clean/<key>/    rows.parquet  dropped.parquet     counts.json  key.json
    data/cache/<name>/03-dedupe/<key>/   ...
    data/cache/<name>/04-balance/<key>/  ... plan.parquet

The key hashes the stage's inputs, settings and code (see `_cached`): a re-run with
nothing changed reuses every folder, and a killed run resumes after the last stage
that completed. The snapshot step gathers the stage folders into one snapshot.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Callable

import polars as pl

from curate.config import Config, load_config, resolve_path
from curate.io import atomic_folder, write_json, write_table
from curate.proc import run_module
from curate.schema import ROW_SCHEMA, StageCounts, count_stage, empty_dropped
from curate.snapshot import file_sha256, source_hash, write_snapshot
from curate import stages
from curate.ingest import ingest


def progress_bar():
    """A rich progress bar on stderr; silent when stderr is not a terminal (CI, logs)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=not console.is_terminal, transient=False,
    )


def new_run_dir(config: Config, root: Path | None = None) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run = resolve_path(config.output.runs, root) / config.name / f"{stamp}-{uuid.uuid4().hex[:6]}"
    run.mkdir(parents=True, exist_ok=True)
    return run


def _counts(stage_dir: Path) -> StageCounts:
    return StageCounts.from_dict(json.loads((stage_dir / "counts.json").read_text()))


# Source files each stage's output depends on (its cache key covers their content).
_COMMON = ("curate/config.py", "curate/schema.py", "curate/pipeline.py")
STAGE_MODULES = {
    "01-ingest": (*_COMMON, "curate/ingest.py"),
    "02-clean": (*_COMMON, "curate/stages.py", "filters/normalize.py", "filters/quality.py", "filters/pii.py",
                 "filters/blocklist.py", "filters/labels.py"),
    "02-clean-shards": (*_COMMON, "curate/stages.py", "filters/normalize.py", "filters/quality.py", "filters/pii.py",
                        "filters/blocklist.py", "filters/labels.py"),
    "03-dedupe": (*_COMMON, "curate/stages.py", "filters/exact_dedup.py", "filters/near_dup.py"),
    "04-balance": (*_COMMON, "curate/stages.py", "filters/balance.py", "filters/near_dup.py"),
    "05-synthesize": (*_COMMON, "curate/stages.py", "curate/synthesis.py", "curate/synthesis_config.py", "curate/templates.py",
                      "curate/engine.py", "filters/*.py"),
}


def stage_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached(config: Config, stage: str, parts: dict, compute: Callable[[Path], None]) -> Path:
    """Run `compute(folder)` unless a complete folder for the same key exists; return the folder.

    The key covers the stage's inputs (content hashes, or the upstream folder's key),
    its settings and the code, so an unchanged stage is never recomputed and a run
    killed mid-way resumes from the last completed stage. The folder is filled under a
    temporary name and renamed into place: a folder under its key is always complete.
    """
    parts = {**parts, "stage": stage, "code": source_hash(STAGE_MODULES[stage])}
    base = resolve_path(config.output.cache) / config.name / stage
    out = base / stage_key(parts)
    if (out / "counts.json").is_file():
        CACHE_EVENTS.append((stage, "hit"))
        return out
    with atomic_folder(out) as tmp:  # replaces an incomplete leftover (no counts.json)
        compute(tmp)
        write_json(parts, tmp / "key.json")
    CACHE_EVENTS.append((stage, "computed"))
    return out


# (stage, "hit" | "computed") in the order they happened in this process: for summaries and tests.
CACHE_EVENTS: list[tuple[str, str]] = []


def _file_hashes(paths: list[Path]) -> dict[str, str]:
    return {str(p): file_sha256(p) for p in paths}


def step_ingest(config_path: str, overrides: list[str]) -> Path:
    config = load_config(config_path, overrides)
    labels_file = [resolve_path(config.task.labels_file)] if config.task.labels_file else []
    parts = {
        "inputs": input_hashes(config),
        "task": config.task.model_dump(mode="json"),
        "data": config.data.model_dump(mode="json"),
        "ingest": config.ingest.model_dump(mode="json"),
        "labels_file": _file_hashes(labels_file),
    }

    def compute(out: Path) -> None:
        with progress_bar() as bar:
            tasks: dict[str, object] = {}

            def report(source: str, advance: int, total: int | None) -> None:
                if source not in tasks:
                    tasks[source] = bar.add_task(f"ingest {Path(source).name}", total=total)
                bar.update(tasks[source], advance=advance)

            rows, quarantine, counts = ingest(config, progress=report)
            for task_id in tasks.values():
                bar.update(task_id, completed=bar.tasks[task_id].total)
        write_table(rows, out / "rows.parquet")
        write_table(quarantine, out / "quarantine.parquet")
        write_json(counts.to_dict(), out / "counts.json")

    return _cached(config, "01-ingest", parts, compute)


def _rows_step(config: Config, stage: str, prev: Path, parts: dict, run: Callable) -> Path:
    """A stage that maps the previous stage's rows to (kept, dropped, counts[, plan])."""

    def compute(out: Path) -> None:
        result = run(pl.read_parquet(Path(prev) / "rows.parquet"))
        kept, dropped, counts = result[:3]
        write_table(kept, out / "rows.parquet")
        write_table(dropped, out / "dropped.parquet")
        if len(result) > 3:
            write_table(result[3], out / "plan.parquet")
        write_json(counts.to_dict(), out / "counts.json")

    return _cached(config, stage, {"prev": Path(prev).name, **parts}, compute)


def _clean_parts(config: Config) -> dict:
    blocklists = [resolve_path(f) for f in config.clean.blocklist.files]
    return {"clean": config.clean.model_dump(mode="json"), "task": config.task.model_dump(mode="json"), "blocklists": _file_hashes(blocklists)}


def step_clean(config_path: str, overrides: list[str], prev: Path) -> Path:
    config = load_config(config_path, overrides)
    return _rows_step(config, "02-clean", prev, _clean_parts(config), lambda rows: stages.clean(rows, config))


# Sharded clean, for task runners that spread work over machines (Ray): clean is row-wise,
# so cleaning row shards and concatenating them in order gives the same bytes as one pass,
# and the merged folder has the same cache key as `step_clean`'s.


def split_shards(config_path: str, overrides: list[str], prev: Path, n: int) -> list[Path]:
    """Write the previous stage's rows as n contiguous shards; return their paths."""
    config = load_config(config_path, overrides)
    rows = pl.read_parquet(Path(prev) / "rows.parquet")
    folder = resolve_path(config.output.cache) / config.name / "shards" / f"{Path(prev).name}-{n}"
    size = max(1, -(-rows.height // n))
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.parquet"
        if not path.exists():
            write_table(rows.slice(i * size, size), path)
        paths.append(path)
    return paths


def step_clean_shard(config_path: str, overrides: list[str], shard: Path) -> Path:
    """Clean one shard (cached by the shard's content like any stage)."""
    config = load_config(config_path, overrides)
    parts = {**_clean_parts(config), "shard": file_sha256(shard)}

    def compute(out: Path) -> None:
        kept, dropped, counts = stages.clean(pl.read_parquet(shard), config)
        write_table(kept, out / "rows.parquet")
        write_table(dropped, out / "dropped.parquet")
        write_json(counts.to_dict(), out / "counts.json")

    return _cached(config, "02-clean-shards", parts, compute)


def merge_clean(config_path: str, overrides: list[str], prev: Path, shard_dirs: list[Path]) -> Path:
    """Concatenate cleaned shards, in order, into the folder `step_clean` would have written."""
    config = load_config(config_path, overrides)

    def run(rows: pl.DataFrame):
        kept = pl.concat([pl.read_parquet(Path(d) / "rows.parquet") for d in shard_dirs])
        dropped = pl.concat([pl.read_parquet(Path(d) / "dropped.parquet") for d in shard_dirs])
        return kept, dropped, count_stage("clean", rows, kept, dropped)

    return _rows_step(config, "02-clean", prev, _clean_parts(config), run)


def step_dedupe(config_path: str, overrides: list[str], prev: Path) -> Path:
    config = load_config(config_path, overrides)
    parts = {"dedupe": config.dedupe.model_dump(mode="json")}
    return _rows_step(config, "03-dedupe", prev, parts, lambda rows: stages.dedupe(rows, config))


def step_balance(config_path: str, overrides: list[str], prev: Path) -> Path:
    config = load_config(config_path, overrides)
    parts = {"balance": config.balance.model_dump(mode="json"), "seed": config.seed, "labels": config.label_set()}
    return _rows_step(config, "04-balance", prev, parts, lambda rows: stages.balance(rows, config))


def _model_identity(config: Config) -> dict:
    """What identifies the model's weights for cache keys: its folder's recorded hashes."""
    from curate.model import DEFAULT_MODEL_DIR, MARKER

    folder = resolve_path(config.model.path) if config.model.path else resolve_path(str(DEFAULT_MODEL_DIR))
    marker = folder / MARKER
    if marker.is_file():
        return {"path": str(folder), "files": json.loads(marker.read_text()).get("files")}
    return {"path": str(folder), "config": file_sha256(folder / "config.json") if (folder / "config.json").is_file() else None}


def step_synthesize(config_path: str, overrides: list[str], prev: Path) -> Path:
    """Fill the balance plan's deficits with synthetic rows (curate/synthesis.py).

    The generation runs in a child process (`python -m curate.synthesis`, see
    curate/proc.py), its output in the stage folder's synthesis.log.
    Rows in = the real rows + every generation; kept = real rows + synthetic rows that
    passed; each other generation is a filtered row with its stage and reason.
    """
    config = load_config(config_path, overrides)
    plan = pl.read_parquet(Path(prev) / "plan.parquet")
    syn = config.synthesis
    templates = sorted(resolve_path(syn.templates_dir).glob("*.jinja"))
    parts = {
        "synthesis": syn.model_dump(mode="json"),
        "task": config.task.model_dump(mode="json"),
        "clean": config.clean.model_dump(mode="json"),
        "dedupe": config.dedupe.model_dump(mode="json"),
        "seed": config.seed,
        "model": _model_identity(config),
        "engine": config.model.engine.model_dump(mode="json"),
        "templates": _file_hashes(templates),
    }

    def compute(out: Path) -> None:
        rows = pl.read_parquet(Path(prev) / "rows.parquet")
        wanted = int(plan["synth"].sum())
        if not syn.enabled or wanted == 0:
            synthetic = pl.DataFrame(schema=ROW_SCHEMA)
            rejects = empty_dropped()
            totals = {"enabled": syn.enabled, "requested": wanted, "generated": 0, "kept": 0, "rejected": 0}
        else:
            work = out / "work"
            cmd = ["--config", config_path, "--rows", str(Path(prev) / "rows.parquet"),
                   "--plan", str(Path(prev) / "plan.parquet"), "--out", str(work)]
            for item in overrides:
                cmd += ["--set", item]
            run_module("curate.synthesis", cmd, what="synthesis", log=out / "synthesis.log")
            synthetic = pl.read_parquet(work / "synthetic.parquet")
            raw_rejects = pl.read_parquet(work / "rejects.parquet")
            totals = json.loads((work / "totals.json").read_text())
            rejects = raw_rejects.with_columns(
                stage=pl.concat_str([pl.lit("synthesize."), pl.col("stage")]),
                cluster=pl.lit(None, dtype=pl.String),
            )
            shutil.rmtree(work)
        kept = pl.concat([rows, synthetic], how="diagonal_relaxed")
        generated = synthetic.height + rejects.height
        by_split = {
            split: {
                "rows_in": rows.filter(pl.col("split") == split).height + (generated if split == "train" else 0),
                "kept": kept.filter(pl.col("split") == split).height,
                "filtered": rejects.height if split == "train" else 0,
                "quarantined": 0,
            }
            for split in sorted(set(rows["split"].to_list()) | {"train"})
        }
        counts = StageCounts(
            stage="synthesize",
            rows_in=rows.height + generated,
            kept=kept.height,
            filtered=dict(rejects.group_by("reason").len().iter_rows()) if rejects.height else {},
            by_split=by_split,
        ).check()
        write_table(kept, out / "rows.parquet")
        write_table(rejects, out / "dropped.parquet")
        write_json(totals, out / "synthesis.json")
        write_json(counts.to_dict(), out / "counts.json")

    return _cached(config, "05-synthesize", {"prev": Path(prev).name, **parts}, compute)


def input_hashes(config: Config) -> list[dict]:
    """sha256 and size of every source file (folders: of every file inside, in order)."""
    out = []
    for split, sources in (("train", config.data.train), ("eval", config.data.eval)):
        for source in sources:
            path = resolve_path(source.path)
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for f in files:
                out.append({"split": split, "path": str(f if not path.is_dir() else Path(source.path) / f.relative_to(path)), "sha256": file_sha256(f), "bytes": f.stat().st_size})
    return out


def step_snapshot(config_path: str, overrides: list[str], stage_dirs: list[Path], extra: dict | None = None) -> Path:
    """Gather the stage folders into one immutable snapshot; return its folder."""
    config = load_config(config_path, overrides)
    stage_dirs = [Path(d) for d in stage_dirs]
    final = pl.read_parquet(stage_dirs[-1] / "rows.parquet")
    dropped = [pl.read_parquet(d / "dropped.parquet") for d in stage_dirs if (d / "dropped.parquet").exists()]
    # Synthetic rows and their rejects carry provenance columns real rows lack (null there).
    rejected = pl.concat(dropped, how="diagonal_relaxed") if dropped else empty_dropped()
    synthesis = [json.loads((d / "synthesis.json").read_text()) for d in stage_dirs if (d / "synthesis.json").exists()]
    if synthesis:
        extra = {**(extra or {}), "synthesis": synthesis[-1]}
    quarantine = pl.read_parquet(stage_dirs[0] / "quarantine.parquet")
    plans = [d / "plan.parquet" for d in stage_dirs if (d / "plan.parquet").exists()]
    plan = pl.read_parquet(plans[-1]) if plans else None
    return write_snapshot(
        resolve_path(config.output.snapshots),
        config.name,
        train=final.filter(pl.col("split") == "train"),
        eval=final.filter(pl.col("split") == "eval"),
        rejected=rejected,
        quarantine=quarantine,
        stages=[_counts(d) for d in stage_dirs],
        config=config.model_dump(mode="json", exclude={"train"}),  # the adapter records its own
        config_hash=config.digest(),
        inputs=input_hashes(config),
        extra=extra,
        ingested=pl.read_parquet(stage_dirs[0] / "rows.parquet", columns=["split", "label"]),
        plan=plan,
    )


def write_run_record(config: Config, snapshot: str | Path, stage_dirs: list[str | Path], *, record: Path | None = None,
                     extra: dict | None = None) -> Path:
    """data/runs/<name>/<stamp>-<id>/run.json: which stage folders this run used, hit or computed.

    Written once curation is done and rewritten (same file, `record`) when training adds its paths.
    """
    run = record.parent if record is not None else new_run_dir(config)
    events = dict(CACHE_EVENTS)
    return write_json(
        {
            "snapshot": str(snapshot),
            "stages": [{"stage": Path(d).parent.name, "folder": str(d), "cache": events.get(Path(d).parent.name, "hit")} for d in stage_dirs],
            **({"model_stages": [{"stage": s, "cache": e} for s, e in CACHE_EVENTS if s in ("train", "evaluate")]} if extra else {}),
            **(extra or {}),
        },
        run / "run.json",
    )
