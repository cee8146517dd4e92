"""The trainer: TRL's SFTTrainer with packed rows kept apart and, on the CPU, the LM head run
only where a label is.

TRL's fused LM head (`add_fused_lm_head`, on by default in SFTTrainer) never builds the
(batch, length, vocabulary) logits: it projects the hidden states through the head in tiles
and keeps each position's log-probability of its label. On Triton devices it projects only
the positions whose next-token label is not -100; elsewhere it projects every position, so
that the tile shapes stay fixed for compilers (Neuron). A CPU compiles nothing, and there the
projection over the 49,152-token vocabulary of the bundled model costs about as much per
position as a fifth of the model's forward. With the loss on completions only, most
positions are prompt or padding: `CurateSFTTrainer` lets TRL score only the labelled
positions on the CPU too. The loss, its gradient and the logged metrics are the same
(tests/trainers/test_sft.py); only the work that feeds nothing goes.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager, nullcontext

from trainers import packing


@contextmanager
def labelled_positions_only():
    """Within the block, TRL's fused LM head projects only the positions with a label on the CPU,
    as it does on Triton devices. (TRL reads the choice from `trl.trainer.utils._use_triton`; its
    kernels read their own copy, so the CPU keeps running torch ops.)"""
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


@functools.cache
def _curate_sft_trainer() -> type:
    """The trainer class, made on first use: importing TRL's SFTTrainer takes ~10 s (torch,
    transformers, peft), which the modules that only import this one should not pay."""
    from trl import SFTTrainer

    class CurateSFTTrainer(SFTTrainer):
        """SFTTrainer whose packed batches keep their rows apart (PackedRowsCollator) and whose LM head
        runs only on labelled positions on the CPU.

        `packed_rows=False` keeps TRL's padding-free batch (every packed row joined into one, for
        varlen kernels) and `labelled_only=False` TRL's all-positions head: the benchmark's baselines.
        """

        def __init__(self, *args, packed_rows: bool = True, labelled_only: bool = True, **kwargs):
            super().__init__(*args, **kwargs)
            self.labelled_only = labelled_only
            if self.padding_free and packed_rows:  # packing: replace TRL's collator, which joins the rows
                self.data_collator = packing.PackedRowsCollator(pad_token_id=self.data_collator.pad_token_id)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            before = self._total_train_tokens
            with labelled_positions_only() if self.labelled_only else nullcontext():
                out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            position_ids = inputs.get("position_ids")
            if self.model.training and "attention_mask" not in inputs and position_ids is not None and position_ids.shape[0] > 1:
                n = torch.tensor(packing.real_tokens(position_ids), device=position_ids.device)
                self._total_train_tokens = before + int(self.accelerator.gather_for_metrics(n).sum().item())
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return out

    CurateSFTTrainer.__qualname__ = "CurateSFTTrainer"
    return CurateSFTTrainer


def __getattr__(name: str):  # PEP 562: `from trainers.sft import CurateSFTTrainer` makes the class then
    if name == "CurateSFTTrainer":
        return _curate_sft_trainer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
