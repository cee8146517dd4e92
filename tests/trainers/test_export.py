"""Export and parity for real: a rank-12 adapter with a custom chat template is trained, evaluated
(vLLM, merged), exported, and answers as evaluated through transformers, vLLM offline, vLLM with a
LoRA request and `vllm serve` over HTTP; an export that keeps the base model's template is caught.
(`datasets.load_dataset(snapshot)`: tests/core/test_snapshot.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from transformers import AutoTokenizer

from core.model import resolve_model
from core.train_config import FormatConfig, TrainConfig
from tests.trainers import make_snapshot
from trainers.export import ExportError, check_served_prompt, read_export_meta
from trainers.format import PromptFormat, TaskInfo
from trainers.model_card import model_card
from trainers.qlora import train

# Enough steps at a high rate that the tiny adapter answers every eval row with a label, by a
# margin no kernel's rounding moves; rank 12 (vLLM serves 8 or 16: the served rank is 16) and
# ChatML with the instruction as the system prompt (the served template must add it). One thread,
# as test_qlora's: beside another worker's training, two threads each spun and took 5x as long.
RECIPE = TrainConfig(
    max_steps=16, eval_steps=16, batch_size=4, val_size=4, max_seq_len=128, learning_rate=4e-3,
    logging_steps=1, early_stopping_patience=0, cpu_threads=1, lora_dropout=0.0, lora_r=12, lora_alpha=24,
    format=FormatConfig(template="templates/formats/chatml.jinja"),
)


def _curate(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "500"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    snap = make_snapshot(tmp / "snap", per_label=12, eval_per_label=3, max_chars=120)
    adapter = train(snap, resolve_model(None), RECIPE, out_dir=tmp / "run")
    ev = _curate("eval", "--adapter", str(adapter), "--merged", "--no-baseline", "--no-guided")
    assert ev.returncode == 0, ev.stderr[-3000:]
    out = _curate("export", str(adapter), "--out", str(tmp / "export"))
    assert out.returncode == 0, out.stderr[-3000:]
    return {"tmp": tmp, "snap": snap, "adapter": adapter, "export": tmp / "export"}


@pytest.mark.slow
def test_the_export_is_a_plain_model_folder_that_prompts_as_training_did(exported):
    folder, adapter = exported["export"], exported["adapter"]
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert not (folder / "adapter_config.json").exists()  # weights merged, no peft needed
    fmt = PromptFormat.load(adapter)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert tokenizer.eos_token == fmt.spec.stop_token == "<|im_end|>"
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == fmt.stop_id
    # the user's message alone gets the trained prompt: ChatML, the instruction as system prompt
    served = tokenizer.apply_chat_template([{"role": "user", "content": "my pin is blocked"}], add_generation_prompt=True,
                                           tokenize=False)
    assert served == fmt.encode("my pin is blocked").prompt and served.startswith("<|im_start|>system\nClassify")
    # the adapter's own tokenizer files carry it too (what `vllm serve --lora-modules` users read)
    assert AutoTokenizer.from_pretrained(str(adapter)).chat_template == tokenizer.chat_template
    meta = read_export_meta(folder)
    assert meta["method"] == "qlora" and meta["merged_into"] == "nf4 round trip" and meta["evaluation"].endswith("predictions.jsonl")
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and front["library_name"] == "transformers"
    assert {m["type"] for r in front["model-index"][0]["results"] for m in r["metrics"]} == {"accuracy", "macro_f1", "format_compliance"}
    assert "## Training recipe" in card and "| lora_r | 12 |" in card and "## Intended use and limitations" in card
    # the adapter's own card (not peft's stub), rewritten with its metrics by the evaluation
    adapter_front = yaml.safe_load((adapter / "README.md").read_text().split("---")[1])
    assert adapter_front["library_name"] == "peft" and adapter_front["model-index"][0]["results"]


def test_the_model_card_escapes_user_text_and_its_front_matter_parses(tmp_path):
    hostile = "<script>alert(1)</script> [x](javascript:alert(1)) ``` {{ 7*7 }}"
    task = TaskInfo(kind="classification", instruction=hostile, labels=["<img src=x onerror=alert(1)>", "ok"])
    PromptFormat.from_model(resolve_model(None), task, FormatConfig()).save(tmp_path)
    (tmp_path / "train_meta.json").write_text(json.dumps({
        "base_model": str(resolve_model(None)), "method": "qlora", "dataset": "<b>bold</b>", "snapshot_id": "abc",
        "train_rows": 3, "val_rows": 1, "global_step": 2, "config": {"lora_r": 16, "learning_rate": 0.004}}))
    report = {"eval_rows": 2, "task_kind": "classification",
              "systems": {"tuned": {"accuracy": 0.5, "macro_f1": 0.4, "format_compliance": 1.0, "n": 2}}}
    card = model_card(tmp_path, report)
    body = card.split("---", 2)[2]
    fenced = body.split("````text")[1].split("````")[0] if "````text" in body else ""
    outside = re.sub(r"(`+)(.+?)\1", "", body.replace(fenced, ""))  # code spans show HTML as text
    assert "<script>" not in outside and "<img" not in outside and "[x](javascript:" not in outside
    assert "{{ 7*7 }}" in fenced and "49" not in fenced  # the instruction is shown, not rendered, in a longer fence
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and front["library_name"] == "peft"
    assert front["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.5


@pytest.mark.slow
def test_every_serving_path_answers_as_the_evaluation_did(exported):
    """transformers, vLLM offline, vLLM + LoRARequest and `vllm serve` over HTTP on 127.0.0.1."""
    out = _curate("parity", str(exported["export"]), "--out", str(exported["tmp"] / "parity"))
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    report = json.loads((exported["tmp"] / "parity" / "parity.json").read_text())
    assert report["rows"] == 12 and set(report["paths"]) == {"transformers", "vllm", "vllm-lora", "vllm-serve"}
    for name, path in report["paths"].items():
        assert path["agreement"] >= 0.995 and path["prompts_not_as_trained"] == 0, (name, path["differ"])
    assert "| vllm-serve | 12 / 12 |" in out.stdout


@pytest.mark.slow
def test_parity_catches_an_export_that_keeps_the_base_template(exported):
    """The planted fault: the export's tokenizer keeps the base model's chat template (SmolLM2's,
    which writes its own default system prompt). The export's self-check refuses it, and parity
    names every row whose prompt is not training's."""
    fault = exported["tmp"] / "fault"
    shutil.copytree(exported["export"], fault)
    tokenizer = AutoTokenizer.from_pretrained(str(fault))
    tokenizer.chat_template = AutoTokenizer.from_pretrained(str(resolve_model(None))).chat_template
    tokenizer.save_pretrained(str(fault))
    with pytest.raises(ExportError, match="its chat template prompts"):
        check_served_prompt(fault, PromptFormat.load(exported["adapter"]))
    out = _curate("parity", str(fault), "--paths", "transformers", "--out", str(exported["tmp"] / "fault-parity"))
    assert out.returncode == 1
    report = json.loads((exported["tmp"] / "fault-parity" / "parity.json").read_text())
    path = report["paths"]["transformers"]
    assert not report["passed"] and path["prompts_not_as_trained"] == 12
    assert {d["row_id"] for d in path["differ"]} == {json.loads(line)["row_id"] for line in
                                                      (exported["adapter"] / "predictions.jsonl").read_text().splitlines()}
    assert all(d["row_id"] in out.stdout for d in path["differ"])
