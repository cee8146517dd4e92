"""`curate eval-diff` (trainers/eval_diff.py): the flips between two adapters' evaluations, per class, beside the
dataset diff of their training snapshots. The evaluations here are written by hand (pure logic); the snapshots
are real folders and their diff the real one. Two real adapters: tests/trainers/test_qlora.py."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.trainers import LABELS, make_snapshot
from trainers.eval_diff import EvalDiffError, eval_diff, render_html, render_markdown

HOSTILE = "<img src=x onerror=alert(1)> [link](javascript:x) | cell"


def _adapter(folder: Path, snapshot: Path, answers: dict[str, str], golds: dict[str, str]) -> Path:
    """An adapter folder with its meta and an evaluation (report.json + predictions.jsonl) as trainers.evaluate writes them."""
    folder.mkdir(parents=True)
    (folder / "train_meta.json").write_text(json.dumps({"snapshot": str(snapshot), "snapshot_id": snapshot.name}))
    with open(folder / "predictions.jsonl", "w") as fh:
        for rid, gold in golds.items():
            fh.write(json.dumps({"row_id": rid, "gold": gold, "tuned": answers[rid]}) + "\n")
    right = sum(answers[r] == g for r, g in golds.items())
    (folder / "report.json").write_text(json.dumps({
        "adapter": str(folder), "systems": {"tuned": {"accuracy": right / len(golds)}},
        "files": {"predictions": str(folder / "predictions.jsonl")}}))
    return folder


@pytest.fixture
def two(tmp_path):
    snap_a = make_snapshot(tmp_path / "snap-a")
    snap_b = make_snapshot(tmp_path / "snap-b")
    train = pl.read_parquet(snap_b / "train.parquet")
    extra = (train.filter(pl.col("label") == "card_arrival").head(4)
             .with_columns((pl.col("input") + " please").alias("input"), (pl.lit("syn-") + pl.col("row_id")).alias("row_id"),
                           pl.lit(True).alias("synthetic")))
    pl.concat([train, extra]).write_parquet(snap_b / "train.parquet")
    golds = {r["row_id"]: r["label"] for r in pl.read_parquet(snap_a / "eval.parquet").to_dicts()}
    ids = sorted(golds)
    a = {rid: golds[rid] for rid in ids}  # A right everywhere but on two rows
    a[ids[0]], a[ids[1]] = "pin_blocked" if golds[ids[0]] != "pin_blocked" else "card_arrival", HOSTILE
    b = dict(a)
    b[ids[0]] = golds[ids[0]]  # wrong -> right
    b[ids[2]] = next(label for label in LABELS if label != golds[ids[2]])  # right -> wrong
    b[ids[1]] = "something else"  # wrong in both, another answer
    return (_adapter(tmp_path / "a" / "adapter", snap_a, a, golds), _adapter(tmp_path / "b" / "adapter", snap_b, b, golds),
            golds, a, b)


def test_flips_match_the_prediction_files_row_for_row(two):
    adapter_a, adapter_b, golds, a, b = two
    report = eval_diff(adapter_a, adapter_b)
    expected = {rid: ("right->wrong" if a[rid] == g else "wrong->right" if b[rid] == g else "changed")
                for rid, g in golds.items() if a[rid] != b[rid]}
    assert {f["row_id"]: f["kind"] for f in report["flips"]} == expected
    assert report["totals"] == {"right->wrong": 1, "wrong->right": 1, "changed": 1}
    assert report["rows_compared"] == len(golds) and report["train_diff"] == "per class below"
    by = {c["label"]: c for c in report["classes"]}
    for label in LABELS:
        rows = [rid for rid, g in golds.items() if g == label]
        assert by[label]["recall_a"] == round(sum(a[r] == label for r in rows) / len(rows), 3)
        assert by[label]["recall_b"] == round(sum(b[r] == label for r in rows) / len(rows), 3)
    # the dataset diff of the two training snapshots, per class: card_arrival gained 4 synthetic rows
    card = by["card_arrival"]["train"]
    assert (card["train_a"], card["train_b"], card["added"], card["synthetic_b"] - card["synthetic_a"]) == (8, 12, 4, 4)
    assert all(r["synthetic"] and r["input"].endswith(" please") for r in card["added_rows"])
    assert by["pin_blocked"]["train"]["added"] == 0


def test_the_reports_keep_user_text_as_text(two):
    adapter_a, adapter_b, *_ = two
    report = eval_diff(adapter_a, adapter_b)
    md, page = render_markdown(report), render_html(report)
    assert "<img" not in md and "](javascript" not in md and "train rows 8 -> 12 (+4 / -0, synthetic +4)" in md
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_eval_diff_command_writes_markdown_html_and_json(two, tmp_path):
    adapter_a, adapter_b, *_ = two
    res = CliRunner().invoke(app, ["eval-diff", str(adapter_a), str(adapter_b), "--out", str(tmp_path / "flips")])
    assert res.exit_code == 0, res.output
    assert "1 wrong -> right" in res.output
    assert {p.name for p in (tmp_path / "flips").iterdir()} == {"eval_diff.md", "eval_diff.html", "eval_diff.json"}
    assert json.loads((tmp_path / "flips" / "eval_diff.json").read_text())["totals"]["right->wrong"] == 1


def test_an_adapter_without_an_evaluation_is_named(two, tmp_path):
    adapter_a, *_ = two
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(EvalDiffError, match="curate eval --adapter"):
        eval_diff(adapter_a, bare)
    res = CliRunner().invoke(app, ["eval-diff", str(adapter_a), str(bare)])
    assert res.exit_code != 0 and "no evaluation of this adapter" in " ".join(res.output.split())  # wrapped


def test_a_training_snapshot_removed_since_leaves_the_flips(two, tmp_path):
    import shutil

    adapter_a, adapter_b, *_ = two
    shutil.rmtree(tmp_path / "snap-b")
    report = eval_diff(adapter_a, adapter_b)
    assert report["train_diff"].startswith("the training snapshots could not be compared")
    assert report["totals"] == {"right->wrong": 1, "wrong->right": 1, "changed": 1}
    assert all(c["train"] is None for c in report["classes"])
