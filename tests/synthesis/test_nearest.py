"""Nearest real rows for label-check few-shot (synthesis/nearest.py, `shots: nearest`)."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from synthesis.nearest import NearestRows, features
from synthesis.requests import CheckShots
from synthesis.templates import TemplateHeader, load_template

ROWS = [
    {"row_id": "a", "input": "my card has not arrived yet", "label": "card_arrival"},
    {"row_id": "b", "input": "when will my new card arrive", "label": "card_arrival"},
    {"row_id": "c", "input": "how do I top up my account", "label": "top_up"},
    {"row_id": "d", "input": "top up by bank transfer", "label": "top_up"},
    {"row_id": "e", "input": "I forgot my pin", "label": "pin"},
]


def test_features_are_words_and_word_pairs():
    assert features("Top up, NOW") == {"top", "up", "now", "top up", "up now"}


def test_the_closest_row_comes_last_and_excluded_rows_never_appear():
    index = NearestRows(ROWS)
    shots = index.nearest(["can I top up my account by card"], k=3)[0]
    assert len(shots) == 3 and shots[-1]["row_id"] == "c"  # shares "top up", "my account"
    assert shots[-2]["label"] == "top_up"
    again = index.nearest(["can I top up my account by card"], k=3, exclude=[["c"]])[0]
    assert "c" not in [r["row_id"] for r in again] and again[-1]["row_id"] == "d"


def test_answers_depend_on_the_inputs_alone():
    index = NearestRows(ROWS)
    # no known word: every similarity is 0 and ties go to the earlier rows
    assert [r["row_id"] for r in index.nearest(["zzz qqq"], k=2)[0]] == ["b", "a"]
    texts = [r["input"] for r in ROWS] * 3
    assert index.nearest(texts, k=4, chunk=2) == index.nearest(texts, k=4)
    assert all(len(s) == len(ROWS) for s in index.nearest(texts[:2], k=50))  # k is capped by the rows


def test_a_real_row_is_its_own_nearest_unless_excluded():
    index = NearestRows(ROWS)
    texts = [r["input"] for r in ROWS]
    assert [s[-1]["row_id"] for s in index.nearest(texts, k=2)] == [r["row_id"] for r in ROWS]
    kept = index.nearest(texts, k=2, exclude=[[r["row_id"]] for r in ROWS])
    assert all(r["row_id"] not in {x["row_id"] for x in s} for r, s in zip(ROWS, kept))


def test_check_shots_follow_the_template_header():
    train = pl.DataFrame([{**r, "output": r["label"]} for r in ROWS])
    tpl = load_template("banking77_label_check")
    fixed = CheckShots(dataclasses.replace(tpl, header=tpl.header.model_copy(update={"shots": "fixed", "few_shot": 2})), train, 0)
    a, b = fixed.for_texts(["top up please", "lost pin"], exclude=[["c"], ["e"]])
    assert a == b and len(a) == 2  # one draw for every text (exclusion is for nearest shots)
    nearest = CheckShots(dataclasses.replace(tpl, header=tpl.header.model_copy(update={"shots": "nearest", "few_shot": 2})), train, 0)
    a, b = nearest.for_texts(["top up please", "lost my pin"], exclude=[["c"], []])
    assert a[-1]["row_id"] == "d" and b[-1]["row_id"] == "e"


def test_nearest_shots_are_for_label_checks_only():
    with pytest.raises(ValueError, match="shots: nearest is for label_check"):
        TemplateHeader(name="x", job="generate", task="banking77", shots="nearest", parse={"kind": "json", "field": "text", "schema": {"type": "object", "properties": {"text": {"type": "string"}}}})
    assert TemplateHeader(name="x", job="label_check", task="banking77", shots="nearest",
                          parse={"kind": "choice", "choices": "labels"}).shots == "nearest"
