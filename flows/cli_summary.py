"""What `curate run` prints at the end: what happened, where it is, and what to run next.

    print_summary(snapshot_folder)          # the funnel and the class mix (also `curate snapshots show`)
    print_run(result)                       # stage times, synthesis per class, tuned vs base, paths, next steps

Every value that comes from the user's data (class names, paths) is escaped: a label such
as `[bold]` prints as written, never as rich markup. A snapshot with an empty train split
says so under its tables and again as the run's last line.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import polars as pl
from rich.markup import escape
from rich.table import Table

from core.progress import duration
from core.report import class_rows, funnel_rows
from core.snapshot import read_manifest
from flows.cli_common import console
from trainers.summary import evaluation_rows, training_rows


def print_summary(folder: Path) -> None:
    """The snapshot's funnel (rows per stage and reason) and class mix, as tables."""
    manifest = read_manifest(folder)
    funnel = Table(title=f"{escape(manifest['name'])}: rows per stage", title_justify="left")
    for col, justify in (("stage", "left"), ("rows in", "right"), ("kept", "right"), ("filtered", "right"),
                         ("quarantined", "right"), ("reasons", "left")):
        funnel.add_column(col, justify=justify)
    for r in funnel_rows(manifest):
        funnel.add_row(r["stage"], str(r["rows_in"]), str(r["kept"]), str(r["filtered"]), str(r["quarantined"]),
                       escape(r["reasons"]))
    console.print(funnel)

    classes = class_rows(manifest)
    mix = Table(title=f"class mix ({len(classes)} classes)", title_justify="left")
    for col in ("class", "ingested", "planned", "synth budget", "train", "share %", "eval"):
        mix.add_column(col, justify="left" if col == "class" else "right")
    by_size = sorted(classes, key=lambda r: r["train"])
    shown = classes if len(classes) <= 20 else by_size[:8] + [None] + by_size[-8:]
    for r in shown:
        if r is None:
            mix.add_row("...", "", "", "", "", "", "")
            continue
        planned = "" if r["planned"] is None else str(r["planned"])
        budget = "" if r["synth_budget"] is None else str(r["synth_budget"])
        mix.add_row(escape(r["class"]), str(r["ingested"]), planned, budget, str(r["train"]), f"{r['share']:.2f}", str(r["eval"]))
    console.print(mix)
    rows = manifest["rows"]
    console.print(f"[bold]snapshot[/] {escape(display_path(folder))}  (train {rows['train']}, eval {rows['eval']}, "
                  f"rejected {rows['rejected']}, quarantined {rows['quarantine']})", highlight=False)
    warn_empty_train(manifest)


def empty_train_warning(manifest: dict) -> str | None:
    """The warning for a snapshot with no train row (every row quarantined or filtered, or an empty file), else None."""
    rows = manifest["rows"]
    if rows["train"]:
        return None
    return (f"warning: the train split is empty ({rows['quarantine']} quarantined, {rows['rejected']} rejected; see the "
            "funnel above and the snapshot's quarantine.parquet and rejected.parquet): nothing to train on.")


def warn_empty_train(manifest: dict) -> None:
    warning = empty_train_warning(manifest)
    if warning:
        console.print(f"[bold yellow]{escape(warning)}[/]", highlight=False)


def print_synthesis(folder: Path) -> None:
    """What synthesis added per class: requested, generated, kept, the label check's agreement."""
    totals = read_manifest(folder).get("synthesis") or {}
    by_class = totals.get("by_class") or {}
    if not totals.get("generated"):
        return
    table = Table(title=f"synthesis: {totals['kept']} rows kept of {totals['generated']} generated for "
                        f"{totals['requested']} requested (label agreement "
                        f"{totals['label_agreement'] if totals.get('label_agreement') is not None else '-'})",
                  title_justify="left")
    for col in ("class", "requested", "generated", "kept", "label checked", "agreement", "rejected (reason: rows)"):
        table.add_column(col, justify="left" if col in ("class", "rejected (reason: rows)") else "right")
    for label, c in sorted(by_class.items(), key=lambda kv: -kv[1]["target"]):
        agreement = "" if c.get("label_agreement") is None else f"{c['label_agreement']:.2f}"
        rejected = ", ".join(f"{k}: {v}" for k, v in c.get("rejected", {}).items())
        table.add_row(escape(label), str(c["target"]), str(c["generated"]), str(c["kept"]), str(c["label_checked"]),
                      agreement, escape(rejected))
    console.print(table)


def print_stages(stages: list[list]) -> None:
    """Each stage's cache state and its own time."""
    table = Table(title="stages", title_justify="left")
    for col in ("stage", "cache", "seconds"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for stage, cache, seconds in stages:
        table.add_row(stage, cache, "" if seconds is None else f"{seconds:.1f}")
    total = sum(s for _, _, s in stages if s is not None)
    table.add_row("[bold]all stages[/]", "", f"{total:.1f}")
    console.print(table)


def print_training(result: dict) -> None:
    """The training summary and the evaluation table (tuned beside the base model)."""
    table = Table(title="training", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for r in training_rows(result["adapter"]):
        table.add_row(r["metric"], escape(str(r["value"])))
    console.print(table)
    if "evaluation" in result:
        rows = evaluation_rows(result["evaluation"])
        ev = Table(title=f"evaluation on the eval split ({rows[0]['n']} rows)", title_justify="left")
        cols = [c for c in rows[0] if c != "n"]
        for c in cols:
            ev.add_column(c.replace("_", " "), justify="left" if c == "system" else "right")
        for r in rows:
            ev.add_row(*[escape(r[c]) if c == "system" else f"{r[c]:.3f}" for c in cols])
        console.print(ev)


def print_ablation(folder: str | Path) -> None:
    """The ablation (trainers/ablate.py): a row per variant, then each stage's delta and whether it is beyond noise."""
    report = json.loads((Path(folder) / "ablation.json").read_text())
    metrics = report["metrics"]
    seeds = ", ".join(map(str, report["seeds"]))
    over = f"seeds {seeds}, {report['eval_rows']} eval rows (mean, min-max over the seeds)" if len(report["seeds"]) > 1 \
        else f"seed {seeds}, {report['eval_rows']} eval rows"
    table = Table(title=f"ablation: the recipe on the rows after each stage, {over}", title_justify="left")
    for col in ("variant", "train rows", *metrics):
        table.add_column(col.replace("_", " "), justify="left" if col == "variant" else "right")
    for v in report["variants"]:
        cells = []
        for m in metrics:
            s = v["summary"][m]
            cells.append("-" if s["mean"] is None else f"{s['mean']:.3f}" + (f" ({s['min']:.3f}-{s['max']:.3f})" if s["n"] > 1 else ""))
        name = v["variant"] + (f" (= {v['same_rows_as']})" if v["same_rows_as"] else "")
        table.add_row(name, str(v["train_rows"]), *cells)
    console.print(table)
    if report["deltas"]:
        deltas = Table(title="what each stage changed (against the variant before it)", title_justify="left")
        for col in ("stage", *metrics):
            deltas.add_column(col.replace("_", " "), justify="left" if col == "stage" else "right")
        for d in report["deltas"]:
            deltas.add_row(d["stage"], *["-" if d["metrics"][m]["delta"] is None else
                                         f"{d['metrics'][m]['delta']:+.3f} {d['metrics'][m]['verdict']}" for m in metrics])
        console.print(deltas)
    for what, key in (("ablation report", "markdown"), ("ablation chart", "png")):
        console.print(f"[bold]{what}[/]: {escape(display_path(report['files'][key]))}", highlight=False)


def print_iteration(folder: str | Path) -> None:
    """The iterate rounds (trainers/iterate.py): a row per round, then the recall of the classes given budget."""
    report = json.loads((Path(folder) / "iteration.json").read_text())
    rounds = report["rounds"]
    table = Table(title="iterate: evaluation directs synthesis (same eval rows every round)", title_justify="left")
    for col in ("round", "train rows", "synthetic", "accuracy", "macro f1", "ECE", "classes given budget (kept/asked)"):
        table.add_column(col, justify="left" if col.startswith("classes") else "right")
    for r in rounds:
        asked = ", ".join(f"{c} {r['kept'].get(c, 0)}/{n}" for c, n in r["asked"].items()) or "-"
        table.add_row(str(r["iteration"]), str(r["train_rows"]), str(r["synthetic_rows"]), f"{r['accuracy']:.3f}",
                      f"{r['macro_f1']:.3f}", "-" if r["ece"] is None else f"{r['ece']:.3f}", asked)
    console.print(table)
    if report["targeted"]:
        recall = Table(title="recall of the classes given budget, per round", title_justify="left")
        recall.add_column("class")
        for r in rounds:
            recall.add_column(f"round {r['iteration']}", justify="right")
        for c in sorted(report["targeted"], key=lambda c: (report["targeted"][c], c)):
            recall.add_row(c, *["-" if r["per_class"][c]["recall"] is None else f"{r['per_class'][c]['recall']:.2f}"
                                for r in rounds])
        console.print(recall)
    console.print(f"best round: {report['best']} ({report['gain']:+.4f} macro-F1 over round 1)"
                  + (f"; stopped: {report['stopped']}" if report["stopped"] else ""), markup=False, highlight=False)
    for what, key in (("iteration report", "markdown"), ("iteration chart", "png")):
        console.print(f"[bold]{what}[/]: {escape(display_path(report['files'][key]))}", highlight=False)


def display_path(path: str | Path) -> str:
    """A path as the user would type it: relative to the working folder when it is inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def print_run(result: dict, config_path: Path, seconds: float) -> None:
    """The end of `curate run`: the tables, where everything is, and what to run next."""
    folder = Path(result["snapshot"])
    print_summary(folder)
    print_synthesis(folder)
    if "adapter" in result:
        print_training(result)
    print_stages(result["stages"])
    where = [("snapshot", folder), ("class mix chart", folder / "class_mix.png")]
    if "adapter" in result:
        where.append(("adapter", Path(result["adapter"])))
    if "evaluation" in result:
        ev = Path(result["evaluation"])
        where += [("evaluation report", ev / "report.md"), ("confusion matrix", ev / "confusion.png"),
                  ("predictions", ev / "predictions.jsonl")]
    where.append(("run log", Path(result["record"]).parent / "run.log"))
    for what, path in where:
        if path.exists():
            console.print(f"[bold]{what}[/]: {escape(display_path(path))}", highlight=False)
    console.print(f"[bold]done[/] in {duration(seconds)}", highlight=False)
    console.print("next:", highlight=False)
    for command, why in next_steps(result, config_path):
        console.print(f"  {escape(command)}    [dim]# {escape(why)}[/]", highlight=False)
    warn_empty_train(read_manifest(folder))  # the last line, where it is seen


def next_steps(result: dict, config_path: Path) -> list[tuple[str, str]]:
    """Commands worth running after this run, with why."""
    if read_manifest(result["snapshot"])["rows"]["train"] == 0:
        return [(f"curate snapshots show {shlex.quote(display_path(result['snapshot']))}", "why every row was quarantined or filtered"),
                (f"curate config check {shlex.quote(str(config_path))}", "the fields, labels and filters the rows are checked against")]
    if "adapter" not in result:
        return [(f"curate run --config {shlex.quote(str(config_path))} --train", "train and evaluate on this snapshot"),
                (f"curate diff {shlex.quote(display_path(result['snapshot']))}", "what changed against the previous snapshot")]
    adapter = shlex.quote(display_path(result["adapter"]))
    example = _first_eval_input(Path(result["snapshot"]))
    steps = [(f"curate predict --adapter {adapter} {shlex.quote(example)}", "ask the tuned model, in its training format"),
             (f"curate eval --adapter {adapter} --shots 5 --merged", "add the base model's few-shot row to the evaluation")]
    full = Path("configs/banking77_full.yaml")
    if full.is_file() and config_path.name == "banking77.yaml":
        steps.append((f"curate run --config {full}", "the full official splits: 4x the rows per intent (docs/training.md)"))
    return steps


def _first_eval_input(folder: Path) -> str:
    try:
        frame = pl.read_parquet(folder / "eval.parquet", columns=["input"], glob=False).head(1)
        return str(frame["input"][0]) if frame.height else "your text"
    except (OSError, pl.exceptions.PolarsError):
        return "your text"

