"""The pipeline's stages as path-in, path-out steps: what each Prefect task calls.

Each step reads the previous stage's folder, calls the stage function over polars
frames (curate/ingest.py, curate/stages.py), writes its outputs atomically into its
own folder under the run folder, and returns that folder:

    data/runs/<name>/<run_id>/
        01-ingest/  rows.parquet  quarantine.parquet  counts.json
        02-clean/   rows.parquet  dropped.parquet     counts.json
        03-dedupe/  rows.parquet  dropped.parquet     counts.json

`counts.json` is written last: a stage folder without it is incomplete and is
recomputed. The snapshot step gathers all stage folders into one snapshot.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import polars as pl

from curate.config import Config, load_config, resolve_path
from curate.io import read_table, write_json, write_table
from curate.schema import StageCounts, empty_dropped
from curate.snapshot import file_sha256, write_snapshot
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


def step_ingest(config_path: str, overrides: list[str], run_dir: Path) -> Path:
    config = load_config(config_path, overrides)
    out = Path(run_dir) / "01-ingest"
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
    return out


def step_clean(config_path: str, overrides: list[str], prev: Path, run_dir: Path) -> Path:
    config = load_config(config_path, overrides)
    out = Path(run_dir) / "02-clean"
    kept, dropped, counts = stages.clean(pl.read_parquet(Path(prev) / "rows.parquet"), config)
    write_table(kept, out / "rows.parquet")
    write_table(dropped, out / "dropped.parquet")
    write_json(counts.to_dict(), out / "counts.json")
    return out


def step_dedupe(config_path: str, overrides: list[str], prev: Path, run_dir: Path) -> Path:
    config = load_config(config_path, overrides)
    out = Path(run_dir) / "03-dedupe"
    kept, dropped, counts = stages.dedupe(pl.read_parquet(Path(prev) / "rows.parquet"), config)
    write_table(kept, out / "rows.parquet")
    write_table(dropped, out / "dropped.parquet")
    write_json(counts.to_dict(), out / "counts.json")
    return out


def step_balance(config_path: str, overrides: list[str], prev: Path, run_dir: Path) -> Path:
    config = load_config(config_path, overrides)
    out = Path(run_dir) / "04-balance"
    kept, dropped, counts, plan = stages.balance(pl.read_parquet(Path(prev) / "rows.parquet"), config)
    write_table(kept, out / "rows.parquet")
    write_table(dropped, out / "dropped.parquet")
    write_table(plan, out / "plan.parquet")
    write_json(counts.to_dict(), out / "counts.json")
    return out


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
    rejected = pl.concat(dropped) if dropped else empty_dropped()
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
        config=config.model_dump(mode="json"),
        config_hash=config.digest(),
        inputs=input_hashes(config),
        extra=extra,
        ingested=pl.read_parquet(stage_dirs[0] / "rows.parquet", columns=["split", "label"]),
        plan=plan,
    )


def read_rows(stage_dir: Path) -> pl.DataFrame:
    return read_table(Path(stage_dir) / "rows.parquet")
