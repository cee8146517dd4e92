"""`curate ablate` for real, on a dataset config no other test uses: the flow writes a snapshot per variant,
trains the recipe (QLoRA, a few steps) per variant and seed, evaluates each adapter with vLLM, and reports
what each stage changed, with the seeds' spread. Variants whose stage changed no row share their runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import write_config
from trainers.ablate import BEYOND, UNKNOWN, WITHIN, group_score, read_predictions, smallest_quarter

pytestmark = pytest.mark.slow

# Four CLINC150 intents, steeply imbalanced, with what dedupe removes planted: copies of the largest
# intent's queries (exact and cased) and an eval query copied into train. Nothing for clean or balance
# to change: those variants are the ones before them, and cost no training.
PER_INTENT = {"timezone": 16, "cook_time": 10, "calculator": 6, "transfer": 4}
EVAL_PER_INTENT = 4
# Six steps of two packed rows (the whole train split each step): 18 s of training on one thread, and the
# tuned model answers ~0.8 of the eval rows right (chance: 0.25).
STEPS = ["train.max_steps=6", "train.batch_size=2", "train.cpu_threads=1", "train.val_size=4", "train.eval_steps=6",
         "train.logging_steps=1", "train.early_stopping_patience=0", "train.learning_rate=5e-3", "train.lora_r=16",
         "train.lora_alpha=32", "train.lora_dropout=0", "train.gradient_checkpointing=false", "train.eval_merged=true",
         "model.engine.gpu_memory_utilization=0.25"]


def _dataset(tmp: Path) -> Path:
    rows = [json.loads(line) for line in Path("data/clinc150/raw/train_imbalanced.jsonl").read_text().splitlines()
            if line.strip()]
    evals = [json.loads(line) for line in Path("data/clinc150/eval.jsonl").read_text().splitlines() if line.strip()]
    train, eval_rows = [], []
    for intent, n in PER_INTENT.items():
        train += [r for r in rows if r.get("intent") == intent][:n]
        eval_rows += [r for r in evals if r["intent"] == intent][:EVAL_PER_INTENT]
    timezone = [r for r in train if r["intent"] == "timezone"]
    train += timezone[:3] + [{**r, "text": r["text"].upper()} for r in timezone[3:5]] + [eval_rows[0]]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in eval_rows))
    return write_config(tmp, {
        "name": "assistant4", "seed": 0,
        "task": {"kind": "classification", "input_field": "text", "output_field": "intent",
                 "instruction": "Classify the query into one of its intents. Answer with the intent name only.",
                 "labels": sorted(PER_INTENT)},
        "data": {"train": [{"path": str(tmp / "train.jsonl")}], "eval": [{"path": str(tmp / "eval.jsonl")}]},
        "clean": {"min_chars": 3, "min_words": 1},
        "balance": {"strategy": "none"},
        "train": {"format": {"template": "templates/formats/chatml.jinja", "include_instruction": False}},
        "output": {"snapshots": str(tmp / "snap"), "runs": str(tmp / "runs"), "cache": str(tmp / "cache")},
        "allow_outside_paths": True,
    })


def test_ablate_reports_each_stage_against_the_one_before_with_the_seeds_spread(tmp_path):
    config = _dataset(tmp_path)
    sets = sum((["--set", s] for s in [*STEPS, f"train.output_dir={tmp_path / 'adapters'}"]), [])
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"COLUMNS": "250"}
    done = subprocess.run([sys.executable, "-m", "curate", "ablate", "--config", str(config), "--seeds", "0,1", *sets],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = next((tmp_path / "runs" / "assistant4" / "ablations").iterdir())
    report = json.loads((folder / "ablation.json").read_text())
    v = {x["variant"]: x for x in report["variants"]}
    assert list(v) == ["raw", "clean", "dedupe", "balance", "synthesis"]
    # what each stage did to the rows: dedupe removed the 5 copies and the eval query; the rest changed nothing
    raw_rows = sum(PER_INTENT.values()) + 6
    assert (v["raw"]["train_rows"], v["dedupe"]["train_rows"]) == (raw_rows, raw_rows - 6)
    assert (v["clean"]["same_rows_as"], v["balance"]["same_rows_as"], v["synthesis"]["same_rows_as"]) == ("raw", "dedupe", "dedupe")
    # the last variant is the run's own snapshot: the same content, the same id
    snapshot = next((tmp_path / "snap" / "assistant4").glob("*/manifest.json")).parent
    assert v["synthesis"]["snapshot_id"] == snapshot.name
    # two data variants x two seeds: four trainings, four evaluations, the other variants' runs are theirs
    adapters = {r["adapter"] for x in v.values() for r in x["runs"]}
    assert len(adapters) == 4 and len({r["evaluation"] for x in v.values() for r in x["runs"]}) == 4
    assert v["balance"]["runs"] == v["dedupe"]["runs"]
    assert report["smallest_quarter"] == smallest_quarter(PER_INTENT) == ["transfer"]

    # every figure is the evaluation's own: per run from its report and predictions, per variant over the seeds
    for x in v.values():
        assert [r["seed"] for r in x["runs"]] == [0, 1]
        for r in x["runs"]:
            evaluation = json.loads((Path(r["evaluation"]) / "report.json").read_text())
            assert evaluation["eval_rows"] == EVAL_PER_INTENT * len(PER_INTENT)
            assert set(evaluation["systems"]) == {"tuned"}  # no base-model or guided rows in an ablation
            assert r["metrics"]["accuracy"] == evaluation["systems"]["tuned"]["accuracy"]
            assert r["metrics"]["smallest_quarter_recall"] == group_score(read_predictions(r["evaluation"]), ["transfer"])
            meta = json.loads((Path(r["adapter"]) / "train_meta.json").read_text())
            assert meta["config"]["seed"] == r["seed"] and meta["global_step"] == 6
        acc = [r["metrics"]["accuracy"] for r in x["runs"]]
        assert x["summary"]["accuracy"]["min"] == min(acc) and x["summary"]["accuracy"]["max"] == max(acc)
    seeds_differ = [json.loads((Path(r["adapter"]) / "train_meta.json").read_text())["train_loss"] for r in v["raw"]["runs"]]
    assert seeds_differ[0] != seeds_differ[1]  # another seed, another run: not the same numbers twice
    runs = [r for x in (v["raw"], v["dedupe"]) for r in x["runs"]]
    assert sum(r["metrics"]["accuracy"] for r in runs) / len(runs) > 0.5  # the recipe learned the task (chance: 0.25)
    for d in report["deltas"]:
        before, after = v[d["against"]], v[d["stage"]]
        for m, x in d["metrics"].items():
            a, b = before["summary"][m], after["summary"][m]
            assert x["delta"] == pytest.approx(b["mean"] - a["mean"])
            overlap = not (a["max"] < b["min"] or b["max"] < a["min"])
            assert x["verdict"] == (WITHIN if overlap else BEYOND) and x["verdict"] != UNKNOWN
    assert [d["stage"] for d in report["deltas"]] == ["clean", "dedupe", "balance", "synthesis"]

    # the table on the terminal, the markdown for a pull request, the chart
    assert "ablation: the recipe on the rows after each stage, seeds 0, 1" in done.stdout
    assert "clean (= raw)" in done.stdout and "what each stage changed" in done.stdout
    md = (folder / "ablation.md").read_text()
    assert "| balance (same rows as dedupe) |" in md and str(folder) not in md.replace(str(folder / "ablation.png"), "")
    assert (folder / "ablation.png").stat().st_size > 10_000
    # the dedupe variant's snapshot accounts for every row: kept + filtered, stage by stage
    dedupe = Path(v["dedupe"]["snapshot"])
    stages = json.loads((dedupe / "manifest.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == ["ingest", "clean", "dedupe"]
    reasons = Counter(pl.read_parquet(dedupe / "rejected.parquet")["reason"].to_list())
    assert sum(reasons.values()) == 6 and reasons["eval_contamination"] == 1
