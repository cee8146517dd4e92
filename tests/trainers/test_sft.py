"""On the CPU the trainer's LM head runs only where a label is, with the same loss and gradients."""

from __future__ import annotations

import pytest

from core.model import resolve_model
from trainers.format import IGNORE_INDEX
from trainers.packing import PackedRowsCollator
from trainers.sft import labelled_positions_only

A = [1, 9690, 198, 5248, 3037, 314]
B = [1, 4093, 198, 28, 7300, 2003, 2]
C = [1, 4093, 198, 5248, 2]


@pytest.fixture(scope="module")
def model():
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(str(resolve_model(None)), dtype=torch.float32)
    add_fused_lm_head(m, outputs=("log_probs", "entropy", "is_top1"))  # what SFTTrainer does
    return m


def _step(model, batch):
    """Loss, per-token outputs and two gradients of one fused-head forward + backward."""
    model.zero_grad()
    out = model(**batch, use_cache=False, fused_lm_head=True)
    out.loss.backward()
    last = model.model.layers[-1].mlp.down_proj.weight.grad.clone()
    head = model.get_output_embeddings().weight.grad.clone()
    return out, last, head


def test_the_cpu_head_scores_only_labelled_positions_and_trains_the_same(model, monkeypatch):
    import torch
    import trl.trainer.utils as trl_utils

    # completions only: 3 + 2 + 2 labelled tokens among 18 tokens (26 positions with the padding)
    rows = [
        {"input_ids": A + B, "labels": [IGNORE_INDEX] * 3 + A[3:] + [IGNORE_INDEX] * 5 + B[5:], "seq_lengths": [6, 7]},
        {"input_ids": C, "labels": [IGNORE_INDEX] * 3 + C[3:]},
    ]
    batch = PackedRowsCollator(pad_token_id=2)(rows)
    labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert labelled == 7

    scored: list[int] = []
    original_apply = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        scored.append(hidden.shape[0])
        return original_apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    every, last_every, head_every = _step(model, batch)
    original = trl_utils._use_triton
    with labelled_positions_only():
        only, last_only, head_only = _step(model, batch)
    assert trl_utils._use_triton is original  # restored after the block
    n_positions = batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1)
    assert scored == [n_positions, labelled]  # TRL's CPU default, then only the labelled positions

    assert torch.allclose(only.loss, every.loss, rtol=1e-5)
    assert torch.equal(only.is_top1, every.is_top1)
    assert torch.allclose(only.entropy, every.entropy, atol=1e-4)
    for a, b in ((last_only, last_every), (head_only, head_every)):
        # float32 sums in another order, carried back through 30 layers (measured: 2e-4 of the largest)
        assert (a - b).abs().max() <= 1e-3 * b.abs().max()
    assert last_only.abs().sum() > 0 and head_only.abs().sum() > 0  # gradients reached the model
