"""The ablation's report (trainers/ablate.py): per run, per variant over the seeds, per stage with its verdict on
noise. The evaluations here are written by hand (pure logic) on real snapshot-shaped folders; the real
ablation (variants, training, vLLM evaluation through the flow) is tests/flows/test_ablate.py."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.trainers import LABELS, make_snapshot
from trainers.ablate import BEYOND, UNKNOWN, WITHIN, ablation_report, group_score, smallest_quarter, spread, verdict

INGESTED = {"pin_blocked": 3, "card_arrival": 40, "visa_or_mastercard": 12, "lost_or_stolen_phone": 25}


def _variant(folder: Path, sid: str, drop: int = 0) -> Path:
    snap = make_snapshot(folder)
    train = pl.read_parquet(snap / "train.parquet")
    train = train.head(train.height - drop)
    train.write_parquet(snap / "train.parquet")
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest |= {"snapshot_id": sid, "rows": {"train": train.height, "eval": 8},
                 "class_distribution": {**manifest["class_distribution"], "ingested": INGESTED}}
    (snap / "manifest.json").write_text(json.dumps(manifest))
    return snap


def _run(folder: Path, snapshot: Path, wrong: set[str], *, seed: int) -> dict:
    """An adapter with its meta and format report, and an evaluation as trainers.evaluate writes them."""
    adapter, evaluation = folder / "adapter", folder / "eval"
    adapter.mkdir(parents=True)
    evaluation.mkdir()
    (adapter / "train_meta.json").write_text(json.dumps({"global_step": 5, "fit_seconds": 1.0}))
    (folder / "format_report.json").write_text(json.dumps({"violations": [{"row_id": "x"}] * len(wrong)}))
    rows = pl.read_parquet(snapshot / "eval.parquet").to_dicts()
    preds = [{"row_id": r["row_id"], "label": r["label"], "gold": r["output"],
              "tuned": "card_arrival" if r["row_id"] in wrong and r["label"] != "card_arrival" else
              ("pin_blocked" if r["row_id"] in wrong else r["output"])} for r in rows]
    (evaluation / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    accuracy = sum(p["tuned"] == p["gold"] for p in preds) / len(preds)
    (evaluation / "report.json").write_text(json.dumps({
        "task_kind": "classification", "eval_rows": len(preds),
        "systems": {"tuned": {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "format_compliance": 1.0}}}))
    return {"seed": seed, "snapshot": str(snapshot), "adapter": str(adapter), "evaluation": str(evaluation)}


def test_smallest_quarter_spread_and_verdicts():
    assert smallest_quarter(INGESTED) == ["pin_blocked"]
    assert smallest_quarter({f"c{i}": i for i in range(9)}) == ["c0", "c1", "c2"]  # a quarter of 9, rounded up
    a, b, c = spread([0.5, 0.6]), spread([0.7, 0.8]), spread([0.55, 0.75])
    assert (a["mean"], a["min"], a["max"], a["n"]) == (pytest.approx(0.55), 0.5, 0.6, 2)
    assert verdict(a, b) == BEYOND and verdict(b, a) == BEYOND
    assert verdict(a, c) == WITHIN and verdict(c, b) == WITHIN
    assert verdict(spread([0.5]), b) == UNKNOWN
    preds = [{"label": "a", "gold": "a", "tuned": "a"}, {"label": "a", "gold": "a", "tuned": "b"},
             {"label": "b", "gold": "b", "tuned": "b"}, {"label": "c", "gold": "c", "tuned": "x"}]
    assert group_score(preds, ["a", "b"]) == pytest.approx((0.5 + 1.0) / 2)  # a mean of recalls, not of rows
    assert group_score(preds, ["d"]) is None


def test_report_per_variant_per_stage_with_the_seeds_spread(tmp_path):
    raw = _variant(tmp_path / "raw", "raw-id")
    clean = _variant(tmp_path / "clean", "clean-id", drop=4)
    evals = pl.read_parquet(raw / "eval.parquet")
    pin = evals.filter(pl.col("label") == "pin_blocked")["row_id"].to_list()
    others = evals.filter(pl.col("label") != "pin_blocked")["row_id"].to_list()
    runs = [
        {"variant": "raw", **_run(tmp_path / "r0", raw, set(pin) | {others[0]}, seed=0)},
        {"variant": "raw", **_run(tmp_path / "r1", raw, set(pin), seed=1)},
        {"variant": "clean", **_run(tmp_path / "c0", clean, {pin[0], others[0]}, seed=0)},
        {"variant": "clean", **_run(tmp_path / "c1", clean, set(), seed=1)},
        # a stage that changed no row: the same snapshot id, named as such
        {"variant": "dedupe", **_run(tmp_path / "d0", clean, {pin[0], others[0]}, seed=0)},
        {"variant": "dedupe", **_run(tmp_path / "d1", clean, set(), seed=1)},
    ]
    report = ablation_report(runs, tmp_path / "out")
    assert report["smallest_quarter"] == ["pin_blocked"] and report["seeds"] == [0, 1]
    v = {x["variant"]: x for x in report["variants"]}
    assert list(v) == ["raw", "clean", "dedupe"]
    assert (v["raw"]["train_rows"], v["clean"]["train_rows"]) == (8 * len(LABELS), 8 * len(LABELS) - 4)
    assert v["dedupe"]["same_rows_as"] == "clean" and v["clean"]["same_rows_as"] is None
    n = evals.height
    assert [r["metrics"]["accuracy"] for r in v["raw"]["runs"]] == [pytest.approx((n - 3) / n), pytest.approx((n - 2) / n)]
    raw_small, clean_small = v["raw"]["summary"]["smallest_quarter_recall"], v["clean"]["summary"]["smallest_quarter_recall"]
    assert (raw_small["min"], raw_small["max"], clean_small["min"], clean_small["max"]) == (0.0, 0.0, 0.5, 1.0)
    assert v["raw"]["format_violations"] == 3  # the seed-0 run's format report
    d = {x["stage"]: x for x in report["deltas"]}
    assert d["clean"]["against"] == "raw"
    assert d["clean"]["metrics"]["smallest_quarter_recall"] == {"delta": pytest.approx(0.75), "verdict": BEYOND}
    # accuracy: raw 5/8..6/8 against clean 6/8..8/8: the ranges touch, so within noise
    assert (d["clean"]["metrics"]["accuracy"]["delta"]) == pytest.approx((6 + 8) / 16 - (5 + 6) / 16)
    assert d["clean"]["metrics"]["accuracy"]["verdict"] == WITHIN
    assert d["dedupe"]["metrics"]["accuracy"] == {"delta": pytest.approx(0.0), "verdict": WITHIN}
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert "| dedupe (same rows as clean) |" in md and "+0.750 (beyond the seeds' spread)" in md
    assert json.loads((tmp_path / "out" / "ablation.json").read_text())["deltas"] == report["deltas"]
    png = (tmp_path / "out" / "ablation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_one_seed_says_the_spread_is_unknown(tmp_path):
    raw = _variant(tmp_path / "raw", "raw-id")
    clean = _variant(tmp_path / "clean", "clean-id", drop=2)
    runs = [{"variant": "raw", **_run(tmp_path / "r0", raw, set(), seed=0)},
            {"variant": "clean", **_run(tmp_path / "c0", clean, set(), seed=0)}]
    report = ablation_report(runs, tmp_path / "out")
    assert {m["verdict"] for m in report["deltas"][0]["metrics"].values()} == {UNKNOWN}
    assert "one seed: spread unknown" in (tmp_path / "out" / "ablation.md").read_text()
