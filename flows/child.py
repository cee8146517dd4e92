"""The child process of a stage's heavy work: `python -m flows.child JOB JOB_FILE` (started by flows/proc.py).

    synthesize  synthesis.synthesize.synthesize_stage on a balance stage's rows and plan -> the stage's tables
    iterate     the same on an iterate round's snapshot, its plan from the last evaluation (trainers/iterate.py),
                the last adapter as label check (trainers/checker.py) -> the round's tables and plan
    train       trainers.ray_train.train_adapter on a snapshot (here, or on Ray Train workers) -> <run>/adapter/
    evaluate    trainers.evaluate.evaluate of an adapter on its snapshot's eval split -> report.json, report.md
    export      trainers.export.export_model of an evaluated adapter -> a merged model folder
    parity      trainers.parity.parity of an export against its evaluation -> parity.json, parity.md

The job file names the resolved config (read with core.config.load_config, as the parent
loaded it) and the job's paths; every setting comes from the config. vLLM's engine
starts in a spawned process, which imports this module again: hence the `__main__`
guard. A child that ran an engine leaves through core.engine.exit_now once its outputs
are written (vLLM's own shutdown can hang, and it takes the engine's processes along).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import polars as pl

from core.config import Config, load_config
from core.engine import exit_now
from core.engine_pool import DataParallel
from core.io import write_json, write_table
from flows.cache import write_rows_stage
from flows.proc import child_log_handler, die_with_parent
from synthesis.synthesize import synthesize_stage
from trainers.checker import TunedChecker
from trainers.evaluate import evaluate
from trainers.export import export_model
from trainers.format_check import FormatViolationError
from trainers.iterate import plan_round
from trainers.parity import parity
from trainers.ray_train import train_adapter


def synthesize_job(config: Config, inputs: dict) -> None:
    rows, plan, out = pl.read_parquet(inputs["rows"], glob=False), pl.read_parquet(inputs["plan"], glob=False), Path(inputs["out"])
    kept, dropped, counts, totals = synthesize_stage(rows, plan, config)
    write_json(totals, out / "synthesis.json")
    write_rows_stage(out, kept, dropped, counts)
    print(json.dumps({k: totals.get(k) for k in ("requested", "generated", "kept", "rejected", "label_agreement")}), flush=True)


def iterate_job(config: Config, inputs: dict) -> None:
    """An iterate round's data: the last round's snapshot rows plus synthetic rows for the classes its evaluation
    scored worst, each labelled blind by its adapter (trainers/checker.py) and kept when that agrees."""
    it, out, snapshot, iteration = config.iterate, Path(inputs["out"]), Path(inputs["snapshot"]), int(inputs["iteration"])
    rows = pl.concat([pl.read_parquet(snapshot / f"{split}.parquet", glob=False) for split in ("train", "eval")],
                     how="diagonal_relaxed")
    labels = config.label_set() or sorted(set(rows["label"].drop_nulls().to_list()))  # no fixed set: the classes seen
    plan = plan_round(inputs["evaluation"], labels, budget=it.budget, classes=it.classes, focus=it.focus_rows)
    checker = TunedChecker(inputs["adapter"], config.model.engine, labels, work_dir=out / "checker", seed=config.seed,
                           memory_utilization=it.checker_memory_utilization)
    kept, dropped, counts, totals = synthesize_stage(rows, plan, config.iteration_run(iteration), checker=checker,
                                                     min_check_confidence=it.min_confidence, iteration=iteration)
    shutil.rmtree(out / "checker", ignore_errors=True)  # the merged model: the base's size again
    write_table(plan, out / "plan.parquet")
    write_json(totals, out / "synthesis.json")
    write_rows_stage(out, kept, dropped, counts)
    print(json.dumps({k: totals.get(k) for k in ("requested", "generated", "kept", "rejected", "label_agreement")}), flush=True)


def train_job(config: Config, inputs: dict) -> None:
    try:
        adapter = train_adapter(inputs["snapshot"], inputs["model"], config.train.trainer_config(), out_dir=inputs["out"])
    except FormatViolationError as exc:
        sys.exit(str(exc))
    print(adapter, flush=True)


def evaluate_job(config: Config, inputs: dict) -> None:
    t = config.train
    report = evaluate(inputs["adapter"], inputs["snapshot"], shots=t.eval_shots, baseline=t.eval_baseline,
                      max_examples=t.eval_max_rows, out_dir=inputs["out"], guided=t.eval_guided, merged=t.eval_merged,
                      seed=config.seed, engine_config=config.model.engine, base_guided=t.eval_baseline_guided,
                      parallel=DataParallel.from_config(config), label_probs=config.label_probs)
    print(Path(report["files"]["markdown"]).read_text(), flush=True)


def export_job(config: Config, inputs: dict) -> None:
    report = json.loads((Path(inputs["evaluation"]) / "report.json").read_text())
    print(export_model(inputs["adapter"], inputs["out"], report=report, dtype=config.model.engine.dtype), flush=True)


def parity_job(config: Config, inputs: dict) -> None:
    e = config.export
    report = parity(inputs["export"], inputs["snapshot"], reference=Path(inputs["evaluation"]) / "predictions.jsonl",
                    paths=e.paths, min_agreement=e.min_agreement, out_dir=inputs["out"], engine_config=config.model.engine,
                    seed=config.seed)
    print(Path(report["files"]["markdown"]).read_text(), flush=True)


JOBS = {"synthesize": synthesize_job, "iterate": iterate_job, "train": train_job, "evaluate": evaluate_job,
        "export": export_job, "parity": parity_job}
ENGINE_JOBS = {"synthesize", "iterate", "evaluate", "parity"}  # they run a vLLM engine


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] not in JOBS:
        sys.exit(f"usage: python -m flows.child {{{','.join(JOBS)}}} JOB_FILE")
    job, spec = argv[0], json.loads(Path(argv[1]).read_text())
    die_with_parent(spec["parent_pid"])  # a killed run leaves no orphan behind (flows/proc.py)
    child_log_handler()  # progress lines on stdout, passed on by the parent (flows/proc.py)
    JOBS[job](load_config(spec["config"]), spec["inputs"])
    if job in ENGINE_JOBS:
        exit_now(0)  # the outputs are complete: leave without waiting for the engine's shutdown


if __name__ == "__main__":
    main(sys.argv[1:])
