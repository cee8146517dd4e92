"""Packed rows stay apart in the batch: position ids restart per example, no attention mask."""

from __future__ import annotations

import pytest

from core.model import resolve_model
from trainers.format import IGNORE_INDEX
from trainers.packing import PackedRowsCollator, real_tokens

A = [1, 9690, 198, 5248, 3037, 314]
B = [1, 4093, 198, 28, 7300, 2003, 2]
C = [1, 4093, 198, 5248, 2]


def test_packed_rows_are_kept_apart_and_masked():
    rows = [
        {"input_ids": A + B, "labels": [IGNORE_INDEX] * 3 + A[3:] + [IGNORE_INDEX] * 3 + B[3:], "seq_lengths": [6, 7]},
        {"input_ids": C, "labels": [IGNORE_INDEX] * 3 + C[3:]},  # one example, no seq_lengths
    ]
    batch = PackedRowsCollator(pad_token_id=2)(rows)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention mask: the mask comes from the positions
    assert tuple(batch["input_ids"].shape) == (2, 13)
    assert batch["position_ids"][0].tolist() == list(range(6)) + list(range(7))
    assert batch["position_ids"][1].tolist() == list(range(5)) + [0] * 8
    assert batch["input_ids"][1].tolist() == C + [2] * 8
    assert batch["labels"][0].tolist() == rows[0]["labels"]
    assert batch["labels"][1].tolist() == rows[1]["labels"] + [IGNORE_INDEX] * 8
    assert real_tokens(batch["position_ids"]) == 13 + 5  # the trained tokens, padding left out
    # the first token of every example carries no loss, even if its label said otherwise
    rows[0]["labels"] = list(rows[0]["input_ids"])
    labels = PackedRowsCollator(pad_token_id=2)(rows)["labels"][0].tolist()
    assert labels[0] == labels[6] == IGNORE_INDEX and labels[1:6] == A[1:]


@pytest.mark.slow
def test_packed_rows_give_each_example_its_own_logits():
    """Through the collator, on the bundled model: every example in a batch of packed rows gets the
    logits it has alone, so nothing leaks across examples or rows. Only with use_cache=False (with a
    cache transformers skips the packed-sequence detection); TRL's compute_loss sets it."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(resolve_model(None)), dtype=torch.float32).eval()
    batch = PackedRowsCollator(pad_token_id=2)([
        {"input_ids": A + B, "labels": A + B, "seq_lengths": [len(A), len(B)]},
        {"input_ids": C, "labels": C},
    ])
    with torch.no_grad():
        alone = {name: model(input_ids=torch.tensor([ids])).logits[0] for name, ids in {"A": A, "B": B, "C": C}.items()}
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    assert torch.allclose(packed[0, :len(A)], alone["A"], atol=1e-4)
    assert torch.allclose(packed[0, len(A):], alone["B"], atol=1e-4)
    assert torch.allclose(packed[1, :len(C)], alone["C"], atol=1e-4)
    # the same row joined into one sequence with positions counting on (no restart): B sees A
    joined = model(input_ids=batch["input_ids"][:1], use_cache=False).logits
    assert not torch.allclose(joined[0, len(A):], alone["B"], atol=1e-2)
