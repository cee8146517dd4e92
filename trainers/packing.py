"""Batches of packed rows that SDPA and eager attention can train on without waste.

TRL packs whole examples into rows of at most `max_length` tokens (best-fit decreasing) and
records each row's `seq_lengths`. Its padding-free collator then concatenates the whole
batch into ONE row of batch_size × max_length tokens. That suits varlen kernels (flash
attention reads the sequence boundaries), but SDPA and eager attention, the ones that run on
a CPU and the default on a GPU, then attend over that one long row: a (B·L)² mask and B times
the attention work of B separate rows, most of it masked out.

`PackedRowsCollator` keeps the packed rows apart: a (B, longest row) batch, padded on the
right, with position ids that restart at every example and no attention mask. From those
position ids transformers builds a block-diagonal causal mask per row
(`masking_utils.find_packed_sequence_indices`), so no example attends to another, and the
attention work is B·L², as for padded batches. `trainers.sft.CurateSFTTrainer` trains with this
collator and counts the trained tokens of every row (TRL counts one row's width when a batch
has position ids and no attention mask).
"""

from __future__ import annotations

import functools
from typing import Any

from trainers.format import IGNORE_INDEX


@functools.cache
def _packed_rows_collator() -> type:
    """The collator class, made on first use: it subclasses TRL's collator, and importing
    trl.trainer.sft_trainer takes ~10 s (torch, transformers, peft), which nothing that only
    imports this module (the CLI, the flow, the format check's callers) should pay."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class PackedRowsCollator(DataCollatorForLanguageModeling):
        """(B, L) batches of packed rows: `input_ids`, `labels`, `position_ids`; no attention mask.

        A row without `seq_lengths` is one example. Padding gets position 0 and label -100, and so
        does the first token of every example (its label would be predicted from the example before).
        """

        def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
            super().__init__(pad_token_id=pad_token_id, padding_free=False, pad_to_multiple_of=pad_to_multiple_of)

        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            return _collate(self, examples)

    PackedRowsCollator.__qualname__ = "PackedRowsCollator"  # pickled by reference: trainers.packing.PackedRowsCollator
    return PackedRowsCollator


def __getattr__(name: str):  # PEP 562: `from trainers.packing import PackedRowsCollator` makes the class then
    if name == "PackedRowsCollator":
        return _packed_rows_collator()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _collate(collator, examples: list[dict[str, Any]]) -> dict[str, Any]:
    """PackedRowsCollator.torch_call: pad the rows on the right, positions restarting at every example."""
    import torch
    from trl.trainer.utils import pad

    input_ids = [torch.tensor(e["input_ids"]) for e in examples]
    labels = [torch.tensor(e.get("labels", e["input_ids"])) for e in examples]
    position_ids = [
        collator.get_position_ids_from_packed_seq_lengths([e["seq_lengths"]])[0] if "seq_lengths" in e
        else torch.arange(len(e["input_ids"]))
        for e in examples
    ]
    kw = {"padding_side": "right", "pad_to_multiple_of": collator.pad_to_multiple_of}
    out = {
        "input_ids": pad(input_ids, padding_value=collator.pad_token_id, **kw),
        "labels": pad(labels, padding_value=IGNORE_INDEX, **kw),
        "position_ids": pad(position_ids, padding_value=0, **kw),
    }
    out["labels"][out["position_ids"] == 0] = IGNORE_INDEX
    return out


def real_tokens(position_ids) -> int:
    """Tokens of a (B, L) batch of right-padded packed rows: a row ends at its last non-zero
    position (padding is all 0; an example has at least two tokens, so it ends above 0)."""
    nonzero = position_ids != 0
    ends = position_ids.shape[-1] - nonzero.flip(-1).int().argmax(-1)
    return int(ends.where(nonzero.any(-1), 0).sum())
