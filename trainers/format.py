"""One prompt format for training, evaluation, synthesis checks and prediction, checked token by token.

    fmt = PromptFormat.from_model(model_dir, task_info(snapshot_dir), train_cfg.format)
    enc = fmt.encode("my card has not arrived", "card_arrival")   # prompt ids, training ids, labels
    curate format-check banking77                                  # every row of a snapshot, token by token

A row becomes (prompt, completion) through the tokenizer's chat template (or a Jinja
chat-template file, `train.format.template`): system = the task instruction (plus the
label list when `include_labels`), user = the input, assistant = the output.
`PromptFormat.encode` is the single function that does it and returns the token ids;
training, evaluation, `predict` and the synthesis label check all call it, so the
tokens a model is trained on begin with exactly the tokens it is prompted with.

trainers/format_check.py verifies, before training, that on every example the tokens a
model is trained on begin with exactly the tokens it is prompted with.

The format travels with the adapter:
`save` writes format.json, format_template.jinja and the tokenizer files, whose chat template
is the trained one (`served_chat_template`); `load` reads them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from core.train_config import FormatConfig

FORMAT_FILE = "format.json"
TEMPLATE_FILE = "format_template.jinja"
IGNORE_INDEX = -100


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

        format_cfg = format_cfg or FormatConfig()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        return cls.from_tokenizer(tokenizer, task, format_cfg)

    @classmethod
    def from_tokenizer(cls, tokenizer, task: TaskInfo, format_cfg=None) -> "PromptFormat":
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

    def served_chat_template(self) -> str:
        """The chat template a stack that reads the model folder should prompt with: the trained
        template, with the trained system prompt put first when a conversation brings none.

        Written into the tokenizer files of every adapter and export (`save`, trainers.export),
        so `vllm serve`, transformers' `apply_chat_template` and any OpenAI-compatible client
        sending only the user's message get the prompt the model was trained on, token for token.
        """
        if not self.spec.system:
            return self.spec.chat_template
        # A JSON string is a Jinja string literal: Jinja reads its escapes as Python's.
        default = json.dumps(self.spec.system, ensure_ascii=False)
        return (
            "{#- the trained system prompt, when the conversation brings none (curate-and-train) -#}\n"
            "{%- if not messages or messages[0]['role'] != 'system' -%}"
            "{%- set messages = [{'role': 'system', 'content': " + default + "}] + messages -%}"
            "{%- endif -%}\n" + self.spec.chat_template
        )

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        served = self.tokenizer.chat_template
        self.tokenizer.chat_template = self.served_chat_template()
        try:
            self.tokenizer.save_pretrained(str(folder))  # what other stacks read: the trained template
        finally:
            self.tokenizer.chat_template = served
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
        completion = full[len(prompt):] if full.startswith(prompt) else full[common_prefix(prompt, full):]
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

    def pad_id(self) -> int:
        """The padding token (the stop token where the tokenizer has none)."""
        pad = self.tokenizer.pad_token_id
        return self.stop_id if pad is None else pad


def common_prefix(a: str, b: str) -> int:
    i = 0
    for x, y in zip(a, b):
        if x != y:
            break
        i += 1
    return i


def read_rows(snapshot_dir: str | Path, split: str) -> list[dict]:
    df = pl.read_parquet(Path(snapshot_dir) / f"{split}.parquet", columns=["row_id", "input", "output", "label"], glob=False)
    return df.to_dicts()
