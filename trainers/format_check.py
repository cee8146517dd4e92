"""The token-level check of the prompt format, before training: every row as training and inference see it.

    report = check_format(fmt, rows, max_seq_len=256)           # FormatReport: .ok, .by_check, .violations
    report = format_check(snapshot_dir, model_dir, train_cfg)   # every train and eval row of a snapshot
    curate format-check banking77 --config configs/train/smollm2-135m-qlora.yaml

Checks, on every example (trainers/format.py's `PromptFormat.encode` makes the tokens):

    prompt_not_prefix        the rendered inference prompt is not a prefix of the training text
    token_merge_at_boundary  prompt tokens are not a prefix of the training tokens (a token merged
                             across the prompt/completion boundary, e.g. a trailing space)
    missing_end_of_turn      the completion does not end with the stop token inference stops on
    doubled_special_token    BOS twice at the start, or the stop token twice at the end
    empty_completion         nothing but the stop token to learn
    truncated                the training sequence is longer than max_seq_len
    loss_mask                after the trainer's own collator, a prompt or padding token carries loss,
                             or a completion token does not

Check names are stable: they become metrics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from core.train_config import TrainConfig
from trainers import packing as packing_mod
from trainers.format import IGNORE_INDEX, Encoded, PromptFormat, common_prefix, read_rows, task_info

CHECKS = (
    "prompt_not_prefix",
    "token_merge_at_boundary",
    "missing_end_of_turn",
    "doubled_special_token",
    "empty_completion",
    "truncated",
    "loss_mask",
)


class FormatViolationError(RuntimeError):
    """The format check found violations and `allow_format_violations` is off."""


@dataclass
class Violation:
    row_id: str
    check: str
    detail: str
    position: int | None = None
    expected: str | None = None  # the token inference sees (or should end with)
    actual: str | None = None  # the token training sees

    def __str__(self) -> str:
        where = f" at token {self.position}" if self.position is not None else ""
        toks = f": inference {self.expected!r} vs training {self.actual!r}" if self.expected or self.actual else ""
        return f"{self.row_id}: {self.check}{where}{toks} ({self.detail})"


@dataclass
class FormatReport:
    rows: int
    violations: list[Violation]
    max_tokens: int = 0
    mean_tokens: float = 0.0
    spec: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def by_check(self) -> dict[str, int]:
        return dict(Counter(v.check for v in self.violations))

    def rows_with(self, check: str) -> list[str]:
        return [v.row_id for v in self.violations if v.check == check]

    def summary(self, limit: int = 20) -> str:
        if self.ok:
            return f"format check: {self.rows} rows, no violations (longest {self.max_tokens} tokens)"
        lines = [f"format check: {len(self.violations)} violation(s) in {self.rows} rows: {self.by_check}"]
        lines += [f"  {v}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... {len(self.violations) - limit} more (see format_report.json)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "ok": self.ok,
            "by_check": self.by_check,
            "max_tokens": self.max_tokens,
            "mean_tokens": round(self.mean_tokens, 1),
            "violations": [asdict(v) for v in self.violations],
        }


def check_row(fmt: PromptFormat, row_id: str, text: str, output: str, max_seq_len: int) -> tuple[list[Violation], Encoded]:
    """Every check but the loss mask on one row."""
    tok = fmt.tokenizer
    enc = fmt.encode(text, output)
    out: list[Violation] = []
    full_text = fmt._render(fmt.messages(text, output), add_generation_prompt=False)
    if not full_text.startswith(enc.prompt):
        i = common_prefix(enc.prompt, full_text)
        out.append(Violation(row_id, "prompt_not_prefix", "rendered prompt differs from the training text at "
                             f"character {i}", i, enc.prompt[i:i + 12], full_text[i:i + 12]))
    whole = fmt._ids(enc.prompt + enc.completion)
    p = enc.prompt_ids
    if whole[: len(p)] != p:
        i = next((k for k, (a, b) in enumerate(zip(p, whole)) if a != b), min(len(p), len(whole)))
        exp = tok.convert_ids_to_tokens(p[i]) if i < len(p) else None
        act = tok.convert_ids_to_tokens(whole[i]) if i < len(whole) else None
        out.append(Violation(row_id, "token_merge_at_boundary",
                             f"prompt tokens are not a prefix of the training tokens (prompt has {len(p)})",
                             i, exp, act))
    ids = enc.input_ids
    if not ids or ids[-1] != fmt.stop_id:
        last = tok.convert_ids_to_tokens(ids[-1]) if ids else None
        out.append(Violation(row_id, "missing_end_of_turn", f"completion {enc.completion[-30:]!r} does not end "
                             "with the stop token", len(ids) - 1, fmt.spec.stop_token, last))
    bos = tok.bos_token_id
    if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
        out.append(Violation(row_id, "doubled_special_token", "BOS twice at the start", 1, tok.bos_token, tok.bos_token))
    if len(ids) > 1 and ids[-1] == fmt.stop_id and ids[-2] == fmt.stop_id:
        out.append(Violation(row_id, "doubled_special_token", "stop token twice at the end", len(ids) - 1,
                             fmt.spec.stop_token, fmt.spec.stop_token))
    if len(ids) - len(p) <= 1:
        out.append(Violation(row_id, "empty_completion", "no completion tokens besides the stop token", len(p)))
    if len(ids) > max_seq_len:
        out.append(Violation(row_id, "truncated", f"{len(ids)} tokens > max_seq_len {max_seq_len}: the "
                             "completion would be cut", max_seq_len))
    return out, enc

def check_format(fmt: PromptFormat, rows: Iterable[dict], *, max_seq_len: int, packing: bool = True, batch_size: int = 8) -> FormatReport:
    """Check every row ({row_id, input, output}); also run the trainer's collator over the encoded rows."""
    violations: list[Violation] = []
    encoded: list[tuple[str, Encoded]] = []
    for row in rows:
        found, enc = check_row(fmt, str(row["row_id"]), row["input"], row["output"], max_seq_len)
        violations += found
        encoded.append((str(row["row_id"]), enc))
    violations += check_loss_mask(encoded, pad_token_id=fmt.pad_id(), packing=packing, batch_size=batch_size)
    lengths = [len(e.input_ids) for _, e in encoded] or [0]
    return FormatReport(len(encoded), violations, max(lengths), sum(lengths) / len(lengths), asdict(fmt.spec))


def check_loss_mask(encoded: list[tuple[str, Encoded]], *, pad_token_id: int, packing: bool, batch_size: int) -> list[Violation]:
    """Collate like the trainer and verify the labels: no loss on prompt or padding positions, loss on
    every completion token (the stop token included). With packing each batch's
    examples go into one packed row through the trainer's collator (trainers.packing); without, TRL's
    collator pads them."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = packing_mod.PackedRowsCollator(pad_token_id) if packing else DataCollatorForLanguageModeling(pad_token_id=pad_token_id)
    out: list[Violation] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        if packing:
            batch = collator([{"input_ids": [t for _, e in chunk for t in e.input_ids],
                               "labels": [t for _, e in chunk for t in e.labels],
                               "seq_lengths": [len(e.input_ids) for _, e in chunk]}])
        else:
            batch = collator([{"input_ids": e.input_ids, "labels": e.labels} for _, e in chunk])
        labels = batch["labels"]
        offset = 0
        for j, (row_id, e) in enumerate(chunk):
            n, p = len(e.input_ids), len(e.prompt_ids)
            if packing:
                seg = labels[0, offset:offset + n].tolist()
                offset += n
                tail = []
            else:
                seg = labels[j, :n].tolist()
                tail = labels[j, n:].tolist()
            bad_prompt = [k for k in range(min(p, n)) if seg[k] != IGNORE_INDEX]
            bad_completion = [k for k in range(p, n) if seg[k] != e.input_ids[k]]
            if bad_prompt:
                out.append(Violation(row_id, "loss_mask", "loss on a prompt token", bad_prompt[0]))
            if bad_completion:
                out.append(Violation(row_id, "loss_mask", "completion token without loss", bad_completion[0]))
            if any(t != IGNORE_INDEX for t in tail):
                out.append(Violation(row_id, "loss_mask", "loss on padding", n))
    return out


def format_check(snapshot_dir: str | Path, model_dir: str | Path, train_cfg=None, task_cfg=None,
                 splits: Sequence[str] = ("train", "eval")) -> FormatReport:
    """Check every row of a snapshot's splits in the format training would use."""
    train_cfg = train_cfg or TrainConfig()
    fmt = PromptFormat.from_model(model_dir, task_info(snapshot_dir, task_cfg), train_cfg.format)
    rows = [r for s in splits for r in read_rows(snapshot_dir, s)]
    return check_format(fmt, rows, max_seq_len=train_cfg.max_seq_len, packing=train_cfg.packing, batch_size=train_cfg.batch_size)


def format_markdown(report: dict) -> str:
    """A format-check report (FormatReport.to_dict, plus the flow's `refusal`) as markdown: the Prefect artifact."""
    lines = [f"**{'ok' if report['ok'] else 'violations'}**: {report['rows']} rows checked, longest "
             f"{report['max_tokens']} tokens, mean {report['mean_tokens']}", ""]
    lines += [f"- `{k}`: {v}" for k, v in report["by_check"].items()]
    lines += [f"- {v['row_id']}: {v['check']} at token {v['position']}: inference {v['expected']!r} vs training "
              f"{v['actual']!r} ({v['detail']})" for v in report["violations"][:20]]
    return "\n".join(lines) + "\n"
