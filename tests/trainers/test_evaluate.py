"""Metrics, report and confusion plot of trainers.evaluate (no model: fast)."""

from __future__ import annotations

import pytest

from trainers.evaluate import (
    confusion,
    parse_mr,
    pick_shots,
    plot_confusion,
    report_markdown,
    score_classification,
    score_structured,
)


def test_classification_metrics_by_hand():
    golds = ["a", "a", "b", "c"]
    preds = ["a", "b", "b", "zzz"]
    m = score_classification(golds, preds, [True, True, True, False], ["a", "b", "c"])
    assert m["accuracy"] == 0.5
    # a: p=1 r=.5 f=.667; b: p=.5 r=1 f=.667; c: p=0 r=0 f=0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": 0.0}
    assert m["format_compliance"] == 0.75  # "zzz" is not a label (and did not stop)
    assert confusion(golds, preds, ["a", "b", "c"]) == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]


def test_mr_parsing_and_slot_f1():
    assert parse_mr("inform(name[Portal 2], rating[good])") == ("inform", [("name", "Portal 2"), ("rating", "good")])
    assert parse_mr("request()") == ("request", [])
    assert parse_mr("inform(name[Portal 2] garbage)") is None
    assert parse_mr("just text") is None
    golds = ["inform(name[Portal 2], rating[good])", "request(genre[shooter])"]
    preds = ["inform(name[Portal 2], rating[poor])", "not an mr"]
    m = score_structured(golds, preds, [True, True], r"^[a-z_]+\(.*\)$")
    assert m["parse_rate"] == 0.5 and m["exact_match"] == 0.0 and m["format_compliance"] == 0.5
    # tp = act + name = 2; predicted items 3; gold items 5 -> p=2/3, r=2/5
    assert m["slot_f1"] == pytest.approx(2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5))
    assert score_structured(golds, golds, [True, True], None)["exact_match"] == 1.0


def test_shots_have_distinct_labels_and_are_seeded():
    rows = [{"row_id": str(i), "input": f"x{i}", "output": "ab"[i % 2], "label": "ab"[i % 2]} for i in range(10)]
    shots = pick_shots(rows, 3, seed=1)
    assert len(shots) == 2 and {o for _, o in shots} == {"a", "b"}
    assert shots == pick_shots(rows, 3, seed=1)


def test_report_markdown_and_confusion_png(tmp_path):
    m = score_classification(["a", "b"], ["a", "a"], [True, True], ["a", "b"])
    report = {"snapshot": "s", "eval_rows": 2, "engine": "transformers", "task_kind": "classification",
              "systems": {"tuned": {**m, "prompt_tokens_mean": 40}, "base zero-shot": {**m, "prompt_tokens_mean": 60}},
              "files": {"confusion_png": str(tmp_path / "confusion.png")}}
    md = report_markdown(report)
    assert "| tuned | 0.500 | 0.333 | 1.000 | 40 |" in md and "base zero-shot" in md
    png = plot_confusion(confusion(["a", "b"], ["a", "a"], ["a", "b"]), ["a", "b"], tmp_path / "confusion.png", "t")
    assert png.read_bytes()[:4] == b"\x89PNG"
