"""`curate iterate` for real: round 1 trains and evaluates; round 2 gives its synthesis budget to the classes round 1
scored worst, has the bundled model write candidates, keeps those round 1's adapter labels as intended (its own vLLM
engine, blind), trains on the enlarged snapshot and evaluates it on the same eval rows; a report per round and class."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from core.snapshot import read_manifest
from synthesis.requests import rows_by_class, steer_shots
from synthesis.templates import load_template
from tests.flows.assistant4 import STEPS, write_dataset
from trainers.iterate import least_sure_rows

pytestmark = pytest.mark.slow


def test_iterate_gives_the_weakest_classes_rows_the_tuned_adapter_agrees_with(tmp_path):
    templates = tmp_path / "templates"  # the project's CLINC150 query template, for this dataset
    templates.mkdir()
    source = Path("templates/clinc150_new_query.jinja").read_text()
    (templates / "assistant4_new_query.jinja").write_text(
        source.replace("name: clinc150_new_query", "name: assistant4_new_query").replace("task: clinc150", "task: assistant4"))
    config = write_dataset(tmp_path, synthesis={"templates_dir": str(templates), "max_attempts": 2},
                           iterate={"classes": 2, "min_confidence": 0.3})
    sets = sum((["--set", s] for s in [*STEPS, "train.eval_baseline=false", f"train.output_dir={tmp_path / 'adapters'}"]), [])
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"COLUMNS": "250"}
    done = subprocess.run([sys.executable, "-m", "curate", "iterate", "--config", str(config), "--rounds", "2",
                           "--budget", "6", *sets], env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = next((tmp_path / "runs" / "assistant4" / "iterations").iterdir())
    report = json.loads((folder / "iteration.json").read_text())
    one, two = report["rounds"]

    # round 2's budget went to the two classes round 1 recalled worst (ties: the less confident first)
    first = json.loads((Path(one["evaluation"]) / "report.json").read_text())
    recall, conf = first["systems"]["tuned"]["per_class_recall"], first["per_class_confidence"]
    weakest = sorted(recall, key=lambda c: (recall[c], conf[c], c))[:2]
    assert two["asked"] == dict.fromkeys(weakest, 3) and not one["asked"]

    # its snapshot: round 1's rows, unchanged, plus the synthetic rows kept, each labelled by round 1's adapter
    snap1, snap2 = Path(one["snapshot"]), Path(two["snapshot"])
    assert read_manifest(snap2)["iteration"]["from_snapshot"] == snap1.name
    train1 = pl.read_parquet(snap1 / "train.parquet")
    train2 = pl.read_parquet(snap2 / "train.parquet")
    new = train2.filter(pl.col("iteration") == 2)
    assert train2.height == train1.height + new.height == two["train_rows"] and new.height == sum(two["kept"].values())
    assert new.height >= 1, two
    assert set(train1["row_id"]) < set(train2["row_id"])
    checker = f"tuned:{Path(one['adapter']).parent.name}"
    for r in new.iter_rows(named=True):
        assert r["synthetic"] and r["checker"] == checker and r["label"] in weakest
        assert r["check_label"] == r["intended_label"] == r["label"] and r["check_confidence"] >= 0.3
    # nothing lost: every candidate is a kept row or a rejected one, the disagreements with what the adapter said
    manifest = read_manifest(snap2)
    stage = manifest["stages"][-1]
    assert stage["stage"] == "iterate-2" and stage["rows_in"] == stage["kept"] + sum(stage["filtered"].values())
    rejected = pl.read_parquet(snap2 / "rejected.parquet").filter(pl.col("stage").str.starts_with("synthesize."))
    disagree = rejected.filter(pl.col("reason") == "label_disagreement")
    assert (disagree["check_label"] != disagree["intended_label"]).all() and (disagree["checker"] == checker).all()
    assert rejected.height + new.height == manifest["synthesis"]["generated"]

    # within those classes, the eval rows round 1 was least sure of steered the generator: it was shown the class's
    # real training rows nearest to them (the rejected candidates too: every generation of the round)
    preds = [json.loads(line) for line in (Path(one["evaluation"]) / "predictions.jsonl").read_text().splitlines()]
    focus = {p["label"]: p["focus"] for p in manifest["iteration"]["plan"] if p["synth"]}
    assert focus == {c: least_sure_rows(preds, 3)[c] for c in weakest}
    eval1 = pl.read_parquet(snap1 / "eval.parquet")
    texts = dict(zip(eval1["row_id"], eval1["input"]))
    few_shot = load_template(templates / "assistant4_new_query.jinja").header.few_shot
    steered = steer_shots(rows_by_class(train1), {c: [texts[i] for i in ids] for c, ids in focus.items()}, few_shot)
    written = pl.concat([new.select("label", "few_shot_ids"), rejected.select("intended_label", "few_shot_ids")
                         .rename({"intended_label": "label"})])
    assert written.height == manifest["synthesis"]["generated"]
    for r in written.iter_rows(named=True):
        assert set(r["few_shot_ids"]) <= {x["row_id"] for x in steered[r["label"]]}, r

    # round 2 trained on that snapshot and was scored on the same eval rows
    assert Path(json.loads((Path(two["evaluation"]) / "report.json").read_text())["snapshot"]).name == snap2.name
    assert two["eval_rows"] == one["eval_rows"] and report["best"] in (1, 2)
    assert (folder / "iteration.png").stat().st_size > 10_000
    md = (folder / "iteration.md").read_text()
    assert all(f"| {c} | 2 |" in md for c in weakest)
    assert two["focus"] == focus and all(f"- round 2, {c}: " + ", ".join(ids) in md for c, ids in focus.items())
    assert "best round: " in done.stdout and "iteration chart: " in done.stdout

