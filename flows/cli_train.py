"""The model stages on their own: `curate format-check`, `train`, `eval`, `eval-diff`, `predict`, `export`, `parity`
and `sweep`.

    curate format-check banking77 --config configs/train/smollm2-135m-qlora.yaml
    curate train banking77 --config configs/train/smollm2-135m-qlora.yaml --set max_steps=50
    curate eval --adapter data/runs/adapters/<run>/adapter [--config configs/banking77.yaml]
    curate eval-diff data/runs/adapters/<run-a>/adapter data/runs/adapters/<run-b>/adapter --out reports/flips
    curate predict --adapter data/runs/adapters/<run>/adapter "my card has not arrived"
    curate export data/runs/adapters/<run>/adapter --out data/runs/adapters/<run>/export
    curate parity data/runs/adapters/<run>/export
    curate sweep banking77 --fractions 0.25,0.5,1.0

A training config (configs/train/*.yaml) is read by the same loader as the pipeline's,
with the same `--set` overrides and error messages. `eval` and `predict --vllm` build
their engine from a pipeline config's `model.engine` and `seed` (--config; their
defaults without it). The commands run in this process: the `curate` console script and
`python -m curate` are guarded entry points, as vLLM's spawned engine needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
import yaml
from pydantic import ValidationError

from core.config import Config, ConfigError, load_config
from core.devices import DTYPES
from core.engine import exit_now
from core.model import resolve_model
from core.snapshot import resolve_snapshot
from core.train_config import TrainConfig
from core.vllm_cli import main as vllm_main
from flows.cli_common import console, fail
from flows.logs import console_log
from trainers.curves import grid_points, learning_curve, point_config, point_name, sweep
from trainers.eval_diff import EvalDiffError, eval_diff, render_markdown, write_eval_diff
from trainers.evaluate import evaluate
from trainers.export import ExportError, export_model, find_evaluation, read_export_meta
from trainers.format_check import FormatViolationError, format_check
from trainers.parity import MIN_AGREEMENT, PATHS, ParityError, parity
from trainers.predict import predict
from trainers.ray_train import train_adapter

SNAPSHOT_HELP = "Snapshot folder, id, or dataset name (its latest snapshot)."
TRAIN_CONFIG_HELP = "Training YAML (configs/train/*.yaml; default: the training defaults)."
SET_HELP = "Override a training setting: --set max_steps=20 (repeatable)."
MODEL_HELP = "Base model folder (default: the bundled SmolLM2-135M-Instruct)."
ENGINE_CONFIG_HELP = "Pipeline config whose model.engine and seed build the vLLM engine (default: their defaults)."


def _train_config(path: Optional[Path], overrides: list[str]) -> TrainConfig:
    try:
        return load_config(path, overrides, schema=TrainConfig)
    except ConfigError as exc:
        fail(str(exc))


def _pipeline_config(path: Optional[Path]) -> Config | None:
    try:
        return load_config(path) if path is not None else None
    except ConfigError as exc:
        fail(str(exc))


def _snapshot(ref: str) -> Path:
    try:
        return resolve_snapshot(ref)
    except FileNotFoundError as exc:
        fail(str(exc))


def format_check_cmd(
    snapshot: str = typer.Argument(..., help=SNAPSHOT_HELP),
    model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=TRAIN_CONFIG_HELP),
    overrides: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
) -> None:
    """Check every train and eval row of a snapshot in the training format, token by token (exit 1 on a violation)."""
    report = format_check(_snapshot(snapshot), resolve_model(model), _train_config(config, overrides))
    console.print(report.summary(), highlight=False, markup=False)
    if not report.ok:
        raise typer.Exit(1)


def train_cmd(
    snapshot: str = typer.Argument(..., help=SNAPSHOT_HELP),
    model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=TRAIN_CONFIG_HELP),
    overrides: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: <output_dir>/<dataset>/<snapshot>-<method>-r<rank>-f<fraction>-s<seed>)."),
) -> None:
    """QLoRA (or LoRA) training on a snapshot; prints the adapter folder. Resumes from the run folder's latest checkpoint."""
    cfg = _train_config(config, overrides)
    console_log()  # steps, loss and an ETA on stderr
    try:
        console.print(str(train_adapter(_snapshot(snapshot), resolve_model(model), cfg, out_dir=out)), highlight=False)
    except FormatViolationError as exc:
        fail(str(exc), 1)


def eval_cmd(
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="Adapter folder written by training (its train_meta.json names its snapshot)."),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", help="Snapshot to evaluate on (default: the adapter's training snapshot)."),
    base_only: bool = typer.Option(False, "--base-only", help="Evaluate the bundled base model alone (needs --snapshot)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also evaluate the base model, zero- and few-shot."),
    engine: str = typer.Option("vllm", help="vllm or transformers."),
    shots: int = typer.Option(5, min=0, help="Few-shot examples for the base model's few-shot row."),
    max_examples: Optional[int] = typer.Option(None, "--max-examples", min=1, help="A seeded sample of this many eval rows (default: all)."),
    guided: bool = typer.Option(True, "--guided/--no-guided", help="Also score answers constrained to the label set (guided choice)."),
    merged: bool = typer.Option(False, "--merged", help="Serve the adapter merged into the base weights instead of as a LoRA request "
                                "(vLLM on a CPU: its LoRA ops copy the adapter's weights for every token)."),
    label_probs: bool = typer.Option(False, "--label-probs", help="Classification: also the tuned model's probability of "
                                     "every label per row, and its calibration (trainers/confidence.py)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: the adapter folder)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=ENGINE_CONFIG_HELP),
) -> None:
    """Evaluate an adapter against the base model (zero- and few-shot) on the eval split: report.md, confusion.png."""
    if engine not in ("vllm", "transformers"):
        fail("--engine must be vllm or transformers")
    console_log()  # rows per system and an ETA on stderr
    if adapter is None and not base_only:
        fail("give --adapter DIR, or --base-only with --snapshot")
    ref = snapshot or (json.loads((adapter / "train_meta.json").read_text())["snapshot"] if adapter else None)
    if ref is None:
        fail("--base-only needs --snapshot")
    cfg = _pipeline_config(config)
    report = evaluate(None if base_only else adapter, _snapshot(ref), base_model=resolve_model(None) if base_only else None,
                      engine=engine, shots=shots, baseline=baseline, max_examples=max_examples, out_dir=out, guided=guided,
                      merged=merged, seed=cfg.seed if cfg else 0, engine_config=cfg.model.engine if cfg else None,
                      label_probs=label_probs)
    console.print(Path(report["files"]["markdown"]).read_text(), highlight=False, markup=False)
    if engine == "vllm":
        exit_now(0)  # all is written: leave without waiting for the engine's shutdown


def predict_cmd(
    inputs: list[str] = typer.Argument(..., help="Texts to answer, one per argument."),
    adapter: Path = typer.Option(..., "--adapter", help="Adapter folder written by training (its format and tokenizer are used)."),
    vllm: bool = typer.Option(False, "--vllm", help="Serve with vLLM (LoRA request) instead of transformers."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1, help="Longest answer, in tokens."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=ENGINE_CONFIG_HELP),
) -> None:
    """Answer inputs with an adapter, in the format it was trained with: one `answer<TAB>input` line each."""
    cfg = _pipeline_config(config)
    answers = predict(adapter, inputs, engine="vllm" if vllm else "transformers", max_new_tokens=max_new_tokens,
                      engine_config=cfg.model.engine if cfg else None, seed=cfg.seed if cfg else 0)
    for text, answer in zip(inputs, answers):
        print(f"{answer}\t{text}")
    if vllm:
        exit_now(0)  # leave without waiting for the engine's shutdown (and take its processes along)


def export_cmd(
    adapter: Path = typer.Argument(..., help="Adapter folder written by training."),
    out: Path = typer.Option(..., "--out", help="Folder to write the model into (replaced when it exists)."),
    to: str = typer.Option("merged", "--to", help="merged: the adapter folded into its base, a plain Hugging Face model "
                           "folder. (GGUF is not offered: no maintained converter installs from PyPI; docs/training.md.)"),
    evaluation: Optional[Path] = typer.Option(None, "--eval", help="Evaluation folder whose report.json gives the card its "
                                              "metrics and parity its reference (default: the adapter's latest evaluation)."),
    dtype: str = typer.Option("auto", "--dtype", help="Of the saved weights: auto (what the engine computes in on this "
                              "hardware), bfloat16, float16 or float32."),
) -> None:
    """Write the tuned model as a folder any stack serves as training prompted it: merged weights, the trained chat template and stop token, a model card."""
    if dtype not in DTYPES:
        fail(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if to != "merged":
        fail(f"--to {to}: only `merged` is offered; GGUF needs llama.cpp's converter, which no package on PyPI installs "
             "(docs/training.md)")
    if not (adapter / "train_meta.json").is_file():
        fail(f"{adapter}: not an adapter folder written by `curate train` (no train_meta.json)")
    report = json.loads((evaluation / "report.json").read_text()) if evaluation is not None else find_evaluation(adapter)
    console_log()
    try:
        folder = export_model(adapter, out, report=report, dtype=dtype)
    except ExportError as exc:
        fail(str(exc), 1)
    console.print(str(folder), highlight=False, markup=False)
    if report is None:
        console.print("no evaluation of this adapter found: the card has no metrics, and `curate parity` needs --predictions",
                      highlight=False, markup=False)


def parity_cmd(
    folder: Path = typer.Argument(..., help="Model folder written by `curate export`."),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", help=SNAPSHOT_HELP + " Default: the adapter's training snapshot."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="The evaluation's predictions.jsonl to compare with "
                                               "(default: the one the export recorded)."),
    paths: str = typer.Option(",".join(PATHS), "--paths", help="Serving paths to check, comma-separated."),
    min_agreement: float = typer.Option(MIN_AGREEMENT, "--min-agreement", min=0.0, max=1.0,
                                        help="Share of rows a path must answer as the evaluation did."),
    max_rows: Optional[int] = typer.Option(None, "--max-rows", min=1, help="Check only this many of the evaluated rows."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: <folder>-parity beside the export)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=ENGINE_CONFIG_HELP),
) -> None:
    """Answer the evaluated rows through transformers, vLLM, vLLM with a LoRA request and `vllm serve` over HTTP; exit 1 if a path answers otherwise."""
    try:
        meta = read_export_meta(folder)
    except ExportError as exc:
        fail(str(exc))
    ref = snapshot or json.loads((Path(meta["adapter"]) / "train_meta.json").read_text())["snapshot"]
    cfg = _pipeline_config(config)
    console_log()
    try:
        report = parity(folder, _snapshot(ref), reference=predictions, paths=[p.strip() for p in paths.split(",") if p.strip()],
                        min_agreement=min_agreement, max_rows=max_rows, out_dir=out,
                        engine_config=cfg.model.engine if cfg else None, seed=cfg.seed if cfg else 0)
    except (ParityError, ValueError) as exc:
        fail(str(exc))
    console.print(Path(report["files"]["markdown"]).read_text(), highlight=False, markup=False, soft_wrap=True)
    exit_now(0 if report["passed"] else 1)  # leave without waiting for the engines' shutdown


def vllm_cmd(ctx: typer.Context) -> None:
    """vLLM's own command line, e.g. `curate vllm serve EXPORT --host 127.0.0.1` (the CPU build's `vllm` script fails before it starts)."""
    vllm_main(list(ctx.args))


def _fractions(text: str) -> list[float]:
    try:
        fractions = sorted({float(x) for x in text.replace(" ", ",").split(",") if x.strip()})
    except ValueError:
        raise typer.BadParameter(f"expected numbers in (0, 1], got {text!r}") from None
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise typer.BadParameter(f"each must be in (0, 1], got {fractions}")
    return fractions


def _grid(params: list[str]) -> dict[str, list]:
    """--param key=v1,v2 ... -> {key: [v1, v2]}; each value read as YAML (1e-3, 16, qlora)."""
    grid = {}
    for p in params:
        key, sep, values = p.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise typer.BadParameter(f"expected --param key=value1,value2, got {p!r}")
        if key.strip() in grid:
            raise typer.BadParameter(f"--param {key.strip()} given twice")
        grid[key.strip()] = [yaml.safe_load(v.strip()) for v in values.split(",") if v.strip()]
    return grid


def sweep_cmd(
    snapshot: str = typer.Argument(..., help=SNAPSHOT_HELP),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=TRAIN_CONFIG_HELP),
    overrides: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    fractions: str = typer.Option("0.25,0.5,1.0", help="Nested shares of the train split, e.g. 0.25,0.5,1.0 (without --param)."),
    params: list[str] = typer.Option([], "--param", "-p", help="A training parameter and its values, e.g. "
                                     "--param learning_rate=1e-3,2e-3 or --param method=qlora,lora,lora8,adalora,ia3 (repeatable: a grid)."),
    engine: str = typer.Option("vllm", help="Evaluation engine: vllm or transformers."),
    baseline: bool = typer.Option(False, "--baseline", help="Add the base model as the 0-example point."),
    max_examples: Optional[int] = typer.Option(None, "--max-examples", min=1, help="Evaluate on a seeded sample of this many eval rows."),
    merged: bool = typer.Option(False, "--merged", help="vllm: serve each adapter merged into its base weights, not as a "
                                "LoRA request (the same model, several times faster on a CPU; IA3 and AdaLoRA are always merged)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for curves.json, curves.png and the runs (default: under output_dir)."),
) -> None:
    """Train and evaluate the recipe with one thing varied: any training parameter (--param: metric, peak memory and
    tokens/s per value), or nested fractions of the train split (a learning curve)."""
    console_log()
    snap = _snapshot(snapshot)
    cfg = _train_config(config, overrides)
    if params:
        grid = _grid(params)
        try:
            for values in grid_points(grid):
                point_config(cfg, values)
        except (ValueError, ValidationError) as exc:
            fail(str(exc))
        folder = out or Path(cfg.output_dir) / snap.parent.name / f"sweep-{snap.name}-{point_name(dict.fromkeys(grid, 'x'))}"
        res = sweep(snap, resolve_model(None), cfg, folder, grid=grid, engine=engine, max_examples=max_examples,
                    merged=merged)
        console.print(Path(res["files"]["markdown"]).read_text(), markup=False, highlight=False)
        console.print(res["files"]["png"], highlight=False, markup=False)
        if engine == "vllm":
            exit_now(0)
        return
    shares = _fractions(fractions)
    folder = out or Path(cfg.output_dir) / snap.parent.name / f"curves-{snap.name}-{cfg.method}"
    res = learning_curve(snap, resolve_model(None), cfg, folder, fractions=shares, engine=engine, baseline=baseline,
                         max_examples=max_examples, merged=merged)
    for p in res["points"]:
        console.print(p["train_examples"], {k: round(v, 3) for k, v in p["metrics"].items() if isinstance(v, float)},
                      markup=False)
    console.print(res["files"]["png"], highlight=False, markup=False)
    if engine == "vllm":
        exit_now(0)


def eval_diff_cmd(
    adapter_a: Path = typer.Argument(..., help="The first adapter folder (evaluated: its report.json beside or in it)."),
    adapter_b: Path = typer.Argument(..., help="The second adapter folder, compared against the first."),
    system: str = typer.Option("tuned", "--system", help="Which evaluated system to compare (tuned, 'tuned, guided choice')."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write eval_diff.md, eval_diff.html and eval_diff.json here."),
) -> None:
    """The eval rows whose answer changed between two adapters (right -> wrong, wrong -> right), per class, beside what
    changed in each class's training rows between their snapshots."""
    try:
        report = eval_diff(adapter_a, adapter_b, system=system)
    except EvalDiffError as exc:
        fail(str(exc))
    console.print(render_markdown(report), highlight=False, markup=False)
    if out is not None:
        files = write_eval_diff(report, out)
        console.print(f"written: {files['markdown']}, {files['html']}, {files['json']}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the model-stage commands to the main CLI."""
    app.command("format-check")(format_check_cmd)
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("eval-diff")(eval_diff_cmd)
    app.command("predict")(predict_cmd)
    app.command("export")(export_cmd)
    app.command("parity")(parity_cmd)
    app.command("vllm", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                          "help_option_names": []})(vllm_cmd)
    app.command("sweep")(sweep_cmd)
