"""The run's log lines: a line when each stage starts and ends, progress of the long ones, where they go.

    @task(...)
    @stage_logged
    def ingest(config) -> StageOutput: ...      # "ingest: started" ... "ingest: computed in 1.2s | 3110 in, ..."

    console_log()                              # the `curate` lines on stderr, terminal or not (the CLI)
    with run_log(path): ...                    # and in the run's own log file while the flow runs

Every line goes through the `curate` logger (core.progress): the CLI shows it on stderr
whether or not that is a terminal (a log file, CI, a Prefect worker's output), the flow
copies it into `data/runs/<name>/<stamp>/run.log`, and inside a Prefect run Prefect
sends it to the task's log in the UI (`logging.extra_loggers = "curate"` in
pyproject.toml's [tool.prefect]). The progress of a child process's work arrives as
lines on its stdout, which flows/proc.py passes to the same logger.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from core.progress import LOGGER, duration
from core.schema import StageCounts
from flows.cache import StageOutput
from trainers.summary import evaluation_rows, training_rows

log = logging.getLogger(f"{LOGGER}.stages")
LINE_FORMAT = "%(asctime)s | %(message)s"
DATE_FORMAT = "%H:%M:%S"


def _curate_logger() -> logging.Logger:
    root = logging.getLogger(LOGGER)
    root.setLevel(logging.INFO)
    root.propagate = False  # Prefect's root console handler would print every line a second time
    return root


def console_log(stream=None) -> logging.Handler:
    """The `curate` lines on stderr (once per process, whatever else asks for it)."""
    root = _curate_logger()
    for handler in root.handlers:
        if getattr(handler, "curate_console", False):
            return handler
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(LINE_FORMAT, DATE_FORMAT))
    handler.curate_console = True
    root.addHandler(handler)
    return handler


@contextlib.contextmanager
def run_log(path: str | Path) -> Iterator[Path]:
    """The `curate` lines also appended to `path` while the block runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LINE_FORMAT, DATE_FORMAT))
    root = _curate_logger()
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()


# -- what a stage did, in one line ------------------------------------------------------------
def _counts_line(folder: Path) -> str:
    counts = StageCounts.from_dict(json.loads((folder / "counts.json").read_text()))
    filtered, quarantined = sum(counts.filtered.values()), sum(counts.quarantined.values())
    line = f"{counts.rows_in} rows in, {counts.kept} kept"
    line += f", {filtered} filtered" if filtered else ""
    line += f", {quarantined} quarantined" if quarantined else ""
    return line


def _synthesis_line(folder: Path) -> str:
    totals = json.loads((folder / "synthesis.json").read_text())
    if not totals.get("generated"):
        return "nothing generated (synthesis off, or no deficit)"
    agreement = totals.get("label_agreement")
    return (f"{totals['requested']} rows requested, {totals['generated']} generated, {totals['kept']} kept"
            + (f", label agreement {agreement:.2f}" if agreement is not None else ""))


def describe(out: StageOutput) -> str:
    """What a stage's output holds, for its end line: row counts, losses, metrics."""
    if out.note is not None:
        return out.note
    path = out.path
    try:
        if out.stage == "snapshot":
            rows = json.loads((path / "manifest.json").read_text())["rows"]
            return f"{path.name}: train {rows['train']}, eval {rows['eval']}, rejected {rows['rejected']}, quarantined {rows['quarantine']}"
        if out.stage == "format-check":
            report = json.loads(path.read_text())
            bad = report.get("violations") or []
            return f"{report.get('rows', '?')} rows, " + (f"{len(bad)} violations" if bad else "no violations")
        if out.stage == "train":  # the training table's rows (trainers/summary.py), in one line
            t = {r["metric"]: r["value"] for r in training_rows(path)}
            line = f"{t['steps']} steps on {t['train rows / validation rows'].split(' / ')[0]} rows"
            line += f", loss {t['train loss first -> last']}" if t["train loss first -> last"] != "-" else ""
            return line + (f", validation loss {t['validation loss (best)']}" if t["validation loss (best)"] != "-" else "")
        if out.stage == "evaluate":
            rows = evaluation_rows(path)
            if not rows:
                return "no systems evaluated"
            key = next(k for k in rows[0] if k not in ("system", "n"))  # the headline metric
            return ", ".join(f"{r['system']} {r[key]:.3f}" for r in rows) + f" ({key.replace('_', ' ')})"
        if (path / "synthesis.json").is_file():
            return _counts_line(path) + "; " + _synthesis_line(path)
        if (path / "counts.json").is_file():
            return _counts_line(path)
    except (OSError, KeyError, IndexError, ValueError, StopIteration) as exc:  # a summary line never fails a stage
        return f"({type(exc).__name__} reading its summary)"
    return out.folder


def stage_logged(fn: Callable[..., StageOutput]) -> Callable[..., StageOutput]:
    """Log the stage's start and end (cache, its own time, what it holds); the StageOutput gets its seconds."""
    name = fn.__name__.replace("_", "-")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> StageOutput:
        log.info("%s: started", name)
        started = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:
            log.info("%s: failed after %s: %s", name, duration(time.perf_counter() - started), type(exc).__name__)
            raise
        out = replace(out, seconds=round(time.perf_counter() - started, 2))
        log.info("%s: %s in %s | %s", name, out.cache, duration(out.seconds), describe(out))
        return out

    return wrapper
