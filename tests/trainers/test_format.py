"""The prompt format and its token-level check, with planted faults (tokenizer only: fast)."""

from __future__ import annotations

import json

import pytest

from core.model import resolve_model
from core.train_config import FormatConfig
from trainers.evaluate import base_format
from trainers.format import IGNORE_INDEX, PromptFormat, TaskInfo, task_info
from trainers.format_check import check_format, check_loss_mask

TASK = TaskInfo(kind="classification", instruction="Classify the message.", labels=["pin_blocked", "card_arrival"])
ROWS = [
    {"row_id": "r1", "input": "my pin is blocked, help", "output": "pin_blocked"},
    {"row_id": "r2", "input": "when will my card arrive?", "output": "card_arrival"},
    {"row_id": "r3", "input": "I still have not received the new card", "output": "card_arrival"},
]

# ChatML as the bundled model's template writes it, with one fault planted in each variant.
GOOD = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The assistant turn loses its end-of-turn token: the model would never learn to stop.
NO_EOT = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' + m['content'] + '\\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# A space before the completion: "\n " + "pin" tokenizes as "\n" + " pin" in training, but the prompt ends in " ".
SPACE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n ' + m['content'] + '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n ' }}{% endif %}"
)
# BOS written by the template in front of a ChatML turn that already starts with it.
DOUBLE_BOS = "{{ bos_token }}" + GOOD
# Training renders the assistant role differently from the inference prompt.
ROLE_MISMATCH = GOOD.replace("{% for m in messages %}{{ '<|im_start|>' + m['role']",
                             "{% for m in messages %}{{ '<|im_start|>' + ('model' if m['role'] == 'assistant' else m['role'])")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_model(None)))


def make(tokenizer, tmp_path, template: str | None, **kw) -> PromptFormat:
    path = None
    if template is not None:
        path = tmp_path / "fmt.jinja"
        path.write_text(template)
    return PromptFormat.from_tokenizer(tokenizer, TASK, FormatConfig(template=str(path) if path else None, **kw))


def test_default_chat_template_is_clean_and_masks_the_prompt(tokenizer, tmp_path):
    fmt = make(tokenizer, tmp_path, None)
    report = check_format(fmt, ROWS, max_seq_len=256)
    assert report.ok, report.summary()
    enc = fmt.encode(ROWS[0]["input"], ROWS[0]["output"])
    assert enc.input_ids[: len(enc.prompt_ids)] == enc.prompt_ids
    assert enc.input_ids[-1] == tokenizer.eos_token_id
    assert enc.completion == "pin_blocked<|im_end|>"
    assert all(x == IGNORE_INDEX for x in enc.labels[: len(enc.prompt_ids)])
    assert enc.labels[len(enc.prompt_ids):] == enc.input_ids[len(enc.prompt_ids):]
    # the inference prompt is the same function with no output
    assert fmt.encode(ROWS[0]["input"]).prompt_ids == enc.prompt_ids
    assert fmt.parse("pin_blocked<|im_end|>\n") == "pin_blocked"


def test_good_jinja_file_is_clean(tokenizer, tmp_path):
    assert check_format(make(tokenizer, tmp_path, GOOD), ROWS, max_seq_len=256).ok
    assert check_format(make(tokenizer, tmp_path, open("templates/formats/chatml.jinja").read()), ROWS, max_seq_len=256).ok


def test_dropped_end_of_turn_is_caught_with_row_ids(tokenizer, tmp_path):
    report = check_format(make(tokenizer, tmp_path, NO_EOT), ROWS, max_seq_len=256)
    assert not report.ok
    assert report.rows_with("missing_end_of_turn") == ["r1", "r2", "r3"]
    v = next(v for v in report.violations if v.check == "missing_end_of_turn")
    assert v.expected == "<|im_end|>" and v.actual != "<|im_end|>"
    assert "r1: missing_end_of_turn" in report.summary()


def test_space_before_completion_is_caught_with_the_differing_token(tokenizer, tmp_path):
    fmt = make(tokenizer, tmp_path, SPACE)
    report = check_format(fmt, ROWS, max_seq_len=256)
    assert report.rows_with("token_merge_at_boundary") == ["r1", "r2", "r3"]
    v = report.violations[0]
    assert v.row_id == "r1" and v.check == "token_merge_at_boundary"
    assert (v.expected, v.actual) == ("ĊĠ", "Ċ")  # the prompt ends in one "newline+space" token; training splits newline + " pin"
    assert v.position == len(fmt.encode(ROWS[0]["input"]).prompt_ids) - 1
    # even when allowed, training ids still begin with the exact inference prompt
    enc = fmt.encode(ROWS[0]["input"], ROWS[0]["output"])
    assert enc.input_ids[: len(enc.prompt_ids)] == enc.prompt_ids


def test_doubled_bos_and_role_mismatch_and_truncation(tokenizer, tmp_path):
    report = check_format(make(tokenizer, tmp_path, DOUBLE_BOS), ROWS[:1], max_seq_len=256)
    assert report.by_check == {"doubled_special_token": 1}
    report = check_format(make(tokenizer, tmp_path, ROLE_MISMATCH), ROWS[:1], max_seq_len=256)
    assert "prompt_not_prefix" in report.by_check
    report = check_format(make(tokenizer, tmp_path, None), ROWS, max_seq_len=20)
    assert set(report.rows_with("truncated")) == {"r1", "r2", "r3"}


def test_loss_mask_check_catches_unmasked_prompt_and_padding(tokenizer, tmp_path):
    fmt = make(tokenizer, tmp_path, None)
    encs = [(r["row_id"], fmt.encode(r["input"], r["output"])) for r in ROWS]
    for packing in (True, False):
        assert check_loss_mask(encs, pad_token_id=2, packing=packing, batch_size=2) == []
    encs[1][1].labels = list(encs[1][1].input_ids)  # loss on the prompt: a broken masking step
    for packing in (True, False):
        found = check_loss_mask(encs, pad_token_id=2, packing=packing, batch_size=8)
        assert [(v.row_id, v.check, v.detail) for v in found] == [("r2", "loss_mask", "loss on a prompt token")]


def test_format_travels_with_the_folder(tokenizer, tmp_path):
    fmt = make(tokenizer, tmp_path, GOOD, include_labels=True)
    fmt.save(tmp_path / "adapter")
    assert {"format.json", "format_template.jinja", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in (tmp_path / "adapter").iterdir()}
    again = PromptFormat.load(tmp_path / "adapter")
    assert again.spec == fmt.spec
    assert "pin_blocked, card_arrival" in again.spec.system
    assert again.encode("x y", "pin_blocked").input_ids == fmt.encode("x y", "pin_blocked").input_ids


def test_format_without_the_instruction_keeps_it_for_the_base_model(tokenizer, tmp_path):

    with_it = make(tokenizer, tmp_path, GOOD)
    without = make(tokenizer, tmp_path, GOOD, include_instruction=False)
    enc = without.encode(ROWS[0]["input"], ROWS[0]["output"])
    assert without.spec.system == "" and "<|im_start|>system" not in enc.prompt
    assert enc.prompt == "<|im_start|>user\nmy pin is blocked, help<|im_end|>\n<|im_start|>assistant\n"
    assert len(enc.input_ids) < len(with_it.encode(ROWS[0]["input"], ROWS[0]["output"]).input_ids)
    report = check_format(without, ROWS, max_seq_len=64)
    assert report.ok, report.summary()
    # The bare base model is still told the task and its labels, in the adapter's template.
    base = base_format(without, resolve_model(None), TASK)
    assert base.spec.system == "Classify the message.\nIntents: pin_blocked, card_arrival"
    assert base.encode("x", None).prompt.startswith("<|im_start|>system\nClassify the message.")
    # Labels alone, without the instruction.
    assert make(tokenizer, tmp_path, GOOD, include_instruction=False, include_labels=True).spec.system == (
        "Intents: pin_blocked, card_arrival")


def test_task_info_reads_the_snapshot_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({
        "config": {"task": {"kind": "classification", "instruction": "Do it.", "labels": None, "labels_file": None}},
        "class_distribution": {"train": {"b": 1, "a": 2}, "eval": {"c": 1}},
    }))
    info = task_info(tmp_path)
    assert info.labels == ["a", "b", "c"] and info.instruction == "Do it."
