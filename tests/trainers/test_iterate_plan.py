"""The iterate loop's plan, from an evaluation's files: which classes get the budget, and which of their eval rows
steer the synthesis (pure logic; tests/flows/test_iterate.py runs the loop for real)."""

from __future__ import annotations

import json

import pytest

from trainers.iterate import least_sure_rows, plan_round, stop_reason


def write_evaluation(folder, recall: dict, confidence: dict, predictions: list[dict]):
    folder.mkdir()
    report = {"systems": {"tuned": {"per_class_recall": recall}}, "per_class_confidence": confidence}
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    return folder


PREDICTIONS = [
    {"row_id": "e1", "label": "a", "p_right": 0.9}, {"row_id": "e2", "label": "a", "p_right": 0.05},
    {"row_id": "e3", "label": "a", "p_right": 0.4}, {"row_id": "e4", "label": "a", "p_right": 0.05},
    {"row_id": "e5", "label": "b", "p_right": 0.7}, {"row_id": "e6", "label": "c", "p_right": 0.99},
    {"row_id": "e7", "label": "d", "p_right": 0.2},
]


def test_least_sure_rows_are_the_lowest_probability_of_the_right_answer_ties_by_row_id():
    assert least_sure_rows(PREDICTIONS, 2) == {"a": ["e2", "e4"], "b": ["e5"], "c": ["e6"], "d": ["e7"]}
    assert least_sure_rows([{"row_id": "e1", "label": "a", "p_right": None}, {"row_id": "e2", "label": "a"}], 3) == {}


def test_the_budget_goes_to_the_weakest_classes_and_their_least_sure_rows_steer_it(tmp_path):
    evaluation = write_evaluation(tmp_path / "eval", recall={"a": 0.25, "b": 1.0, "c": 1.0, "d": 0.5},
                                  confidence={"a": 0.35, "b": 0.7, "c": 0.99, "d": 0.2}, predictions=PREDICTIONS)
    plan = plan_round(evaluation, ["a", "b", "c", "d"], budget=7, classes=2, focus=2)
    rows = {r["label"]: r for r in plan.iter_rows(named=True)}
    assert {c: r["synth"] for c, r in rows.items()} == {"a": 4, "d": 3, "b": 0, "c": 0}  # recall, then the remainder
    assert rows["a"]["focus"] == ["e2", "e4"] and rows["d"]["focus"] == ["e7"]
    assert rows["b"]["focus"] == [] and rows["c"]["focus"] == []  # no budget, nothing to steer
    # b is all right but unsure: it comes before a class all right and sure when there are places for it
    plan = plan_round(evaluation, ["a", "b", "c", "d"], budget=9, classes=5, focus=0)
    assert dict(zip(plan["label"], plan["synth"])) == {"a": 3, "b": 3, "c": 0, "d": 3}
    assert plan["focus"].to_list() == [[], [], [], []]


@pytest.mark.parametrize(("scores", "min_gain", "stops"), [
    ([0.8], 0.0, False), ([0.8, 0.83], 0.0, False), ([0.8, 0.8], 0.0, True), ([0.8, 0.81], 0.02, True),
    ([0.8, 0.85, 0.84], 0.0, True),
])
def test_the_loop_stops_at_the_first_round_that_does_not_help(scores, min_gain, stops):
    assert (stop_reason(scores, min_gain=min_gain) is not None) == stops
