"""One prompt format for training, evaluation, synthesis checks and prediction, checked token by token.

    .venv/bin/python -m trainers.format data/snapshots/banking77/<id>     # check a snapshot, print violations

A row becomes (prompt, completion) through the tokenizer's chat template (or a Jinja
chat-template file, `train.format.template`): system = the task instruction (plus the
label list when `include_labels`), user = the input, assistant = the output.
`PromptFormat.encode` is the single function that does it and returns the token ids;
training, evaluation, `predict` and the synthesis label check all call it, so the
tokens a model is trained on begin with exactly the tokens it is prompted with.

`PromptFormat.check` verifies that on every example before training:

    prompt_not_prefix        the rendered inference prompt is not a prefix of the training text
    token_merge_at_boundary  prompt tokens are not a prefix of the training tokens (a token merged
                             across the prompt/completion boundary, e.g. a trailing space)
    missing_end_of_turn      the completion does not end with the stop token inference stops on
    doubled_special_token    BOS twice at the start, or the stop token twice at the end
    empty_completion         nothing but the stop token to learn
    truncated                the training sequence is longer than max_seq_len
    loss_mask                after the trainer's own collator, a prompt or padding token carries loss,
                             or a completion token does not

Check names are stable: they become metrics. The format travels with the adapter:
`save` writes format.json, format_template.jinja and the tokenizer files; `load` reads them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

FORMAT_FILE = "format.json"
TEMPLATE_FILE = "format_template.jinja"
CHECKS = (
    "prompt_not_prefix",
    "token_merge_at_boundary",
    "missing_end_of_turn",
    "doubled_special_token",
    "empty_completion",
    "truncated",
    "loss_mask",
)
IGNORE_INDEX = -100


class FormatViolationError(RuntimeError):
    """The format check found violations and `allow_format_violations` is off."""


@dataclass(frozen=True)
class TaskInfo:
    """What the format and the metrics need to know about the task (from the snapshot manifest)."""

    kind: str  # classification | generation
    instruction: str
    labels: list[str] | None = None
    output_pattern: str | None = None
    class_pattern: str | None = None


def task_info(snapshot_dir: str | Path | None = None, task_cfg: Any = None) -> TaskInfo:
    """TaskInfo from a curate TaskConfig (or dict) and/or the snapshot's manifest.

    The label set: task.labels, else task.labels_file, else the classes seen in the snapshot.
    """
    manifest = {}
    if snapshot_dir is not None:
        manifest = json.loads((Path(snapshot_dir) / "manifest.json").read_text())
    if task_cfg is None:
        task = manifest.get("config", {}).get("task")
        if task is None:
            raise ValueError("no task configuration: pass task_cfg or a snapshot with a manifest")
    else:
        task = task_cfg if isinstance(task_cfg, dict) else task_cfg.model_dump()
    labels = task.get("labels")
    if labels is None and task.get("labels_file"):
        path = Path(task["labels_file"])
        if path.is_file():
            labels = json.loads(path.read_text())
    if labels is None and manifest:
        dist = manifest.get("class_distribution", {})
        labels = sorted(set(dist.get("train", {})) | set(dist.get("eval", {}))) or None
    return TaskInfo(
        kind=task["kind"],
        instruction=task.get("instruction", ""),
        labels=list(labels) if labels else None,
        output_pattern=task.get("output_pattern"),
        class_pattern=task.get("class_pattern"),
    )


@dataclass(frozen=True)
class FormatSpec:
    """Everything needed to reproduce the format; saved as format.json beside the adapter."""

    chat_template: str
    system: str
    stop_token: str
    add_special_tokens: bool = False
    template_source: str = "tokenizer"
    task: dict = field(default_factory=dict)  # TaskInfo as a dict (kind, labels, patterns) for parsing / metrics


@dataclass
class Encoded:
    """One row in the format: texts and the token ids the model sees."""

    prompt: str
    completion: str
    prompt_ids: list[int]
    input_ids: list[int]  # prompt + completion (= prompt_ids at inference)
    labels: list[int]  # IGNORE_INDEX on the prompt


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


def system_prompt(task: TaskInfo, include_labels: bool, include_instruction: bool = True) -> str:
    text = task.instruction.strip() if include_instruction else ""
    if include_labels and task.kind == "classification" and task.labels:
        text = (text + "\n" if text else "") + "Intents: " + ", ".join(task.labels)
    return text


class PromptFormat:
    """A FormatSpec bound to its tokenizer. Build with `from_model` (training) or `load` (an adapter folder)."""

    def __init__(self, spec: FormatSpec, tokenizer):
        self.spec = spec
        self.tokenizer = tokenizer
        self.stop_id = tokenizer.convert_tokens_to_ids(spec.stop_token)
        if self.stop_id is None or self.stop_id == tokenizer.unk_token_id:
            raise ValueError(f"stop token {spec.stop_token!r} is not a single token of this tokenizer")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model_dir: str | Path, task: TaskInfo, format_cfg=None) -> "PromptFormat":
        from transformers import AutoTokenizer

        from trainers.config import FormatConfig

        format_cfg = format_cfg or FormatConfig()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        return cls.from_tokenizer(tokenizer, task, format_cfg)

    @classmethod
    def from_tokenizer(cls, tokenizer, task: TaskInfo, format_cfg=None) -> "PromptFormat":
        from trainers.config import FormatConfig

        format_cfg = format_cfg or FormatConfig()
        if format_cfg.template is not None:
            template, source = Path(format_cfg.template).read_text(encoding="utf-8"), str(format_cfg.template)
        else:
            template, source = tokenizer.chat_template, "tokenizer"
            if not template:
                raise ValueError("the tokenizer has no chat template: set train.format.template to a Jinja file")
        spec = FormatSpec(
            chat_template=template,
            system=system_prompt(task, format_cfg.include_labels, format_cfg.include_instruction),
            stop_token=format_cfg.stop_token or tokenizer.eos_token,
            add_special_tokens=format_cfg.add_special_tokens,
            template_source=source,
            task=asdict(task),
        )
        return cls(spec, tokenizer)

    @classmethod
    def load(cls, folder: str | Path) -> "PromptFormat":
        """The format an adapter (or any folder written by `save`) was trained with."""
        from transformers import AutoTokenizer

        folder = Path(folder)
        if not (folder / FORMAT_FILE).is_file():
            raise FileNotFoundError(f"{folder} has no {FORMAT_FILE}: not an adapter written by trainers.qlora")
        spec = FormatSpec(**json.loads((folder / FORMAT_FILE).read_text()))
        return cls(spec, AutoTokenizer.from_pretrained(str(folder)))

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(folder))
        (folder / TEMPLATE_FILE).write_text(self.spec.chat_template, encoding="utf-8")
        (folder / FORMAT_FILE).write_text(json.dumps(asdict(self.spec), indent=2) + "\n")

    @property
    def task(self) -> TaskInfo:
        return TaskInfo(**self.spec.task) if self.spec.task else TaskInfo(kind="generation", instruction="")

    # -- the one function ---------------------------------------------------------------------
    def messages(self, text: str, output: str | None = None, shots: Sequence[tuple[str, str]] = ()) -> list[dict]:
        msgs = [{"role": "system", "content": self.spec.system}] if self.spec.system else []
        for shot_in, shot_out in shots:
            msgs += [{"role": "user", "content": shot_in}, {"role": "assistant", "content": shot_out}]
        msgs.append({"role": "user", "content": text})
        if output is not None:
            msgs.append({"role": "assistant", "content": output})
        return msgs

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.spec.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=self.spec.add_special_tokens)["input_ids"])

    def encode(self, text: str, output: str | None = None, shots: Sequence[tuple[str, str]] = ()) -> Encoded:
        """Turn one row into (prompt, completion) and token ids. output=None: the inference prompt only.

        The completion is the training text after the prompt, up to and including the stop token
        (whitespace the template writes after it belongs to the next turn: inference stops before it).
        When the prompt's tokens are a prefix of the whole text's tokens the training ids are those of
        the whole text; otherwise (a violation) prompt ids + completion ids, so training still begins
        with exactly the inference prompt.
        """
        prompt = self._render(self.messages(text, shots=shots), add_generation_prompt=True)
        prompt_ids = self._ids(prompt)
        if output is None:
            return Encoded(prompt, "", prompt_ids, list(prompt_ids), [IGNORE_INDEX] * len(prompt_ids))
        full = self._render(self.messages(text, output, shots), add_generation_prompt=False)
        completion = full[len(prompt):] if full.startswith(prompt) else full[_common_prefix(prompt, full):]
        stop = self.spec.stop_token
        cut = completion.rfind(stop)
        if cut >= 0 and not completion[cut + len(stop):].strip():
            completion = completion[: cut + len(stop)]
        full_ids = self._ids(prompt + completion)
        if full_ids[: len(prompt_ids)] != prompt_ids:
            full_ids = prompt_ids + list(self.tokenizer(completion, add_special_tokens=False)["input_ids"])
        labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids):]
        return Encoded(prompt, completion, prompt_ids, full_ids, labels)

    def parse(self, generated: str) -> str:
        """The answer in a generated continuation: up to the stop token, stripped."""
        cut = generated.find(self.spec.stop_token)
        return (generated if cut < 0 else generated[:cut]).strip()

    # -- the token-level check ----------------------------------------------------------------
    def check_row(self, row_id: str, text: str, output: str, max_seq_len: int) -> tuple[list[Violation], Encoded]:
        tok = self.tokenizer
        enc = self.encode(text, output)
        out: list[Violation] = []
        full_text = self._render(self.messages(text, output), add_generation_prompt=False)
        if not full_text.startswith(enc.prompt):
            i = _common_prefix(enc.prompt, full_text)
            out.append(Violation(row_id, "prompt_not_prefix", "rendered prompt differs from the training text at "
                                 f"character {i}", i, enc.prompt[i:i + 12], full_text[i:i + 12]))
        whole = self._ids(enc.prompt + enc.completion)
        p = enc.prompt_ids
        if whole[: len(p)] != p:
            i = next((k for k, (a, b) in enumerate(zip(p, whole)) if a != b), min(len(p), len(whole)))
            exp = tok.convert_ids_to_tokens(p[i]) if i < len(p) else None
            act = tok.convert_ids_to_tokens(whole[i]) if i < len(whole) else None
            out.append(Violation(row_id, "token_merge_at_boundary",
                                 f"prompt tokens are not a prefix of the training tokens (prompt has {len(p)})",
                                 i, exp, act))
        ids = enc.input_ids
        if not ids or ids[-1] != self.stop_id:
            last = tok.convert_ids_to_tokens(ids[-1]) if ids else None
            out.append(Violation(row_id, "missing_end_of_turn", f"completion {enc.completion[-30:]!r} does not end "
                                 "with the stop token", len(ids) - 1, self.spec.stop_token, last))
        bos = tok.bos_token_id
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            out.append(Violation(row_id, "doubled_special_token", "BOS twice at the start", 1, tok.bos_token, tok.bos_token))
        if len(ids) > 1 and ids[-1] == self.stop_id and ids[-2] == self.stop_id:
            out.append(Violation(row_id, "doubled_special_token", "stop token twice at the end", len(ids) - 1,
                                 self.spec.stop_token, self.spec.stop_token))
        if len(ids) - len(p) <= 1:
            out.append(Violation(row_id, "empty_completion", "no completion tokens besides the stop token", len(p)))
        if len(ids) > max_seq_len:
            out.append(Violation(row_id, "truncated", f"{len(ids)} tokens > max_seq_len {max_seq_len}: the "
                                 "completion would be cut", max_seq_len))
        return out, enc

    def check(self, rows: Iterable[dict], *, max_seq_len: int, packing: bool = True, batch_size: int = 8) -> FormatReport:
        """Check every row ({row_id, input, output}); also run the trainer's collator over the encoded rows."""
        violations: list[Violation] = []
        encoded: list[tuple[str, Encoded]] = []
        for row in rows:
            found, enc = self.check_row(str(row["row_id"]), row["input"], row["output"], max_seq_len)
            violations += found
            encoded.append((str(row["row_id"]), enc))
        violations += check_loss_mask(encoded, pad_token_id=self._pad_id(), packing=packing, batch_size=batch_size)
        lengths = [len(e.input_ids) for _, e in encoded] or [0]
        return FormatReport(len(encoded), violations, max(lengths), sum(lengths) / len(lengths), asdict(self.spec))

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.stop_id if pad is None else pad


def _common_prefix(a: str, b: str) -> int:
    i = 0
    for x, y in zip(a, b):
        if x != y:
            break
        i += 1
    return i


def check_loss_mask(encoded: list[tuple[str, Encoded]], *, pad_token_id: int, packing: bool, batch_size: int) -> list[Violation]:
    """Collate like the trainer and verify the labels: no loss on prompt or padding positions, loss on
    every completion token (the stop token included). With packing each batch's
    examples go into one packed row through the trainer's collator (trainers.packing); without, TRL's
    collator pads them."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from trainers.packing import PackedRowsCollator

    collator = PackedRowsCollator(pad_token_id) if packing else DataCollatorForLanguageModeling(pad_token_id=pad_token_id)
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


def read_rows(snapshot_dir: str | Path, split: str) -> list[dict]:
    import polars as pl

    df = pl.read_parquet(Path(snapshot_dir) / f"{split}.parquet", columns=["row_id", "input", "output", "label"])
    return df.to_dicts()


def format_check(snapshot_dir: str | Path, model_dir: str | Path, train_cfg=None, task_cfg=None,
                 splits: Sequence[str] = ("train", "eval")) -> FormatReport:
    """Check every row of a snapshot's splits in the format training would use."""
    from trainers.config import TrainConfig

    train_cfg = train_cfg or TrainConfig()
    fmt = PromptFormat.from_model(model_dir, task_info(snapshot_dir, task_cfg), train_cfg.format)
    rows = [r for s in splits for r in read_rows(snapshot_dir, s)]
    return fmt.check(rows, max_seq_len=train_cfg.max_seq_len, packing=train_cfg.packing, batch_size=train_cfg.batch_size)


if __name__ == "__main__":
    import argparse
    import sys

    from curate.model import resolve_model
    from curate.snapshot import resolve_snapshot
    from trainers.config import load_train_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("snapshot")
    ap.add_argument("--model", default=None)
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    rep = format_check(resolve_snapshot(a.snapshot), resolve_model(a.model), load_train_config(a.config, a.set))
    print(rep.summary())
    sys.exit(0 if rep.ok else 1)
