"""Confidence (trainers/confidence.py): the label distribution's trie walk against a stand-in model whose
next-token probabilities are a table (pure logic), calibration by hand. The real engines: test_qlora.py."""

from __future__ import annotations

import math

import pytest

from trainers.confidence import LabelTrie, calibration, label_distribution

STOP = 0
# labels as token sequences, stop token last: "card" [1, 2], "card_arrival" [1, 3, 4], "pin" [5]
SEQUENCES = {"card": [1, 2, STOP], "card_arrival": [1, 3, 4, STOP], "pin": [5, STOP]}
# P(next | prefix) of a stand-in model, per prompt; what is left goes to tokens that are no label
TABLE = {
    (): {1: 0.6, 5: 0.3},
    (1,): {2: 0.5, 3: 0.4},
    (1, 2): {STOP: 0.9},
    (1, 3): {4: 0.99},
    (1, 3, 4): {STOP: 1.0},
    (5,): {STOP: 0.8},
}


def stand_in(prompt_len: int, calls: list):
    def ask(batch):
        calls.append(len(batch))
        return [{t: math.log(TABLE[tuple(ids[prompt_len:])].get(t, 1e-12)) for t in cands} for ids, cands in batch]
    return ask


def test_the_trie_walk_gives_each_label_its_sequence_probability():
    calls: list[int] = []
    (d,) = label_distribution([[7, 7]], LabelTrie.from_sequences(SEQUENCES), stand_in(2, calls))
    raw = {"card": 0.6 * 0.5 * 0.9, "card_arrival": 0.6 * 0.4 * 0.99 * 1.0, "pin": 0.3 * 0.8}
    assert d.mass == pytest.approx(sum(raw.values()))
    assert d.probs == pytest.approx({k: v / sum(raw.values()) for k, v in raw.items()})
    assert d.best == ("card", pytest.approx(0.27 / sum(raw.values()))) and d.pruned == 0
    assert calls == [1, 2, 2, 1]  # one engine call per depth; a call asks every open node of every row


def test_unlikely_prefixes_are_not_expanded_and_their_mass_is_recorded():
    calls: list[int] = []
    (d,) = label_distribution([[7]], LabelTrie.from_sequences(SEQUENCES), stand_in(1, calls), min_prob=0.6)
    # depth 1: [5] (0.3) is below 0.6 times the likeliest prefix [1] (0.6): pruned, so "pin" gets nothing;
    # depth 2: [1, 3] (0.24) is above 0.6 times [1, 2] (0.30): walked to "card_arrival"
    assert set(d.probs) == {"card", "card_arrival"} and d.pruned == pytest.approx(0.3)
    assert d.mass == pytest.approx(0.6 * 0.5 * 0.9 + 0.6 * 0.4 * 0.99)
    assert calls == [1, 1, 2, 1]  # "pin"'s prefix [5] was never asked about

def test_a_model_that_barely_learned_the_labels_still_ranks_them():
    """Pruning is relative to the row's likeliest prefix: labels a million times less likely than other
    answers are still walked, and normalized over the label set they rank as before."""
    calls: list[int] = []
    unsure = {**TABLE, (): {1: 0.6e-6, 5: 0.3e-6}}

    def ask(batch):
        return [{t: math.log(unsure[tuple(ids[1:])].get(t, 1e-12)) for t in cands} for ids, cands in batch]

    (d,) = label_distribution([[7]], LabelTrie.from_sequences(SEQUENCES), ask)
    (sure,) = label_distribution([[7]], LabelTrie.from_sequences(SEQUENCES), stand_in(1, calls))
    assert d.probs == pytest.approx(sure.probs) and d.mass == pytest.approx(sure.mass * 1e-6)


def test_overlapping_label_sequences_are_refused():
    with pytest.raises(ValueError, match="overlapping"):
        LabelTrie.from_sequences({"a": [1, 2], "b": [1, 2]})


def test_calibration_by_hand():
    conf = [0.95, 0.95, 0.85, 0.15, 0.55, 0.55]
    right = [True, True, False, False, True, False]
    rep = calibration(conf, right)
    bins = {tuple(b["bin"]): b for b in rep["bins"]}
    assert bins[(0.9, 1.0)] == {"bin": [0.9, 1.0], "rows": 2, "confidence": 0.95, "accuracy": 1.0}
    assert bins[(0.5, 0.6)]["accuracy"] == 0.5
    ece = (2 * 0.05 + 1 * 0.85 + 1 * 0.15 + 2 * 0.05) / 6
    assert rep["ece"] == pytest.approx(ece, abs=1e-4) and rep["n"] == 6 and rep["accuracy"] == pytest.approx(0.5)
    assert calibration([1.0], [True])["bins"][0]["bin"] == [0.9, 1.0]  # confidence 1 lands in the last bin
