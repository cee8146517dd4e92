"""`curate ablate` for real, on a dataset config no other test uses: the flow writes a snapshot per variant,
trains the recipe (QLoRA, a few steps) per variant with the seed asked for, evaluates each adapter with vLLM, and
reports what each stage changed. Variants whose stage changed no row share their runs. One seed (each costs a
training and a vLLM evaluation per variant): the verdicts over several seeds' spreads are tests/trainers/test_ablate.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from tests.flows.assistant4 import EVAL_PER_INTENT, PER_INTENT, STEPS, write_dataset
from trainers.ablate import UNKNOWN, group_score, read_predictions, smallest_quarter

pytestmark = pytest.mark.slow

def test_ablate_reports_each_stage_against_the_one_before(tmp_path):
    config = write_dataset(tmp_path)
    sets = sum((["--set", s] for s in [*STEPS, f"train.output_dir={tmp_path / 'adapters'}"]), [])
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"COLUMNS": "250"}
    done = subprocess.run([sys.executable, "-m", "curate", "ablate", "--config", str(config), "--seeds", "1", *sets],
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
    # two data variants: two trainings, two evaluations, the other variants' runs are theirs
    adapters = {r["adapter"] for x in v.values() for r in x["runs"]}
    assert len(adapters) == 2 and len({r["evaluation"] for x in v.values() for r in x["runs"]}) == 2
    assert v["balance"]["runs"] == v["dedupe"]["runs"]
    assert report["smallest_quarter"] == smallest_quarter(PER_INTENT) == ["transfer"]

    # every figure is the evaluation's own: per run from its report and predictions; the seed is the one asked for
    # (the config's train.seed is 0)
    for x in v.values():
        assert [r["seed"] for r in x["runs"]] == [1]
        for r in x["runs"]:
            evaluation = json.loads((Path(r["evaluation"]) / "report.json").read_text())
            assert evaluation["eval_rows"] == EVAL_PER_INTENT * len(PER_INTENT)
            assert set(evaluation["systems"]) == {"tuned"}  # no base-model or guided rows in an ablation
            assert r["metrics"]["accuracy"] == evaluation["systems"]["tuned"]["accuracy"]
            assert r["metrics"]["smallest_quarter_recall"] == group_score(read_predictions(r["evaluation"]), ["transfer"])
            meta = json.loads((Path(r["adapter"]) / "train_meta.json").read_text())
            assert meta["config"]["seed"] == r["seed"] and meta["global_step"] == 6
        acc = x["runs"][0]["metrics"]["accuracy"]
        assert x["summary"]["accuracy"] == {"mean": acc, "min": acc, "max": acc, "std": None, "n": 1}
    runs = [r for x in (v["raw"], v["dedupe"]) for r in x["runs"]]
    assert sum(r["metrics"]["accuracy"] for r in runs) / len(runs) > 0.5  # the recipe learned the task (chance: 0.25)
    for d in report["deltas"]:
        before, after = v[d["against"]], v[d["stage"]]
        for m, x in d["metrics"].items():
            a, b = before["summary"][m], after["summary"][m]
            assert x["delta"] == pytest.approx(b["mean"] - a["mean"])
            assert x["verdict"] == UNKNOWN  # one seed: no spread to call a difference noise or not
    assert [d["stage"] for d in report["deltas"]] == ["clean", "dedupe", "balance", "synthesis"]

    # the table on the terminal, the markdown for a pull request, the chart
    assert "ablation: the recipe on the rows after each stage, seed 1, 16 eval rows" in done.stdout
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
