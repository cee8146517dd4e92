"""Export a tuned adapter as a plain model folder that any stack serves as training prompted it.

    curate export RUN/adapter --out RUN/export
    folder = export_model(adapter_dir, out_dir, report=evaluation_report)

The adapter is folded into the base it was trained on (a QLoRA adapter into the base's NF4
round trip, as evaluation serves it: trainers.predict.load_base) with peft's
`merge_and_unload`, and written as a Hugging Face model folder (safetensors). Its tokenizer
files carry the trained chat template, with the trained system prompt put first when a
conversation brings none (PromptFormat.served_chat_template), and the trained stop token
is the tokenizer's EOS and the model's `eos_token_id` (config and generation config), so
`vllm serve`, transformers' `apply_chat_template` + `generate` and OpenAI-compatible clients
prompt and stop exactly as training did. The folder also holds the format files
(`curate predict` reads them), `export_meta.json` and a model card (trainers.model_card).

Before the folder is published the export checks itself: the prompt its own tokenizer
renders for a user's message, token for token, is the prompt training used. Whether the
weights then answer alike on every serving path is `curate parity` (trainers.parity).

GGUF (llama.cpp, Ollama) is not offered: the converter, llama.cpp's `convert_hf_to_gguf.py`,
is a script of the llama.cpp repository and no package on PyPI installs it; the `gguf`
package writes GGUF files but holds no converter from a Hugging Face model (docs/training.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from core.io import atomic_folder
from core.train_config import base_weights
from trainers.format import PromptFormat
from trainers.model_card import write_model_card
from trainers.predict import adapter_base, adapter_method, load_model

EXPORT_META = "export_meta.json"
# Messages the self-check renders: plain, with the characters templates and tokenizers trip on.
CHECK_MESSAGES = ("my card has not arrived yet", "  Ünïcode, {{ braces }}, a \"quote\" and a trailing space ")


class ExportError(RuntimeError):
    """The exported folder would not prompt the model as training did."""


def check_served_prompt(folder: str | Path, fmt: PromptFormat) -> None:
    """The folder's own tokenizer and chat template give, for a user's message alone, the prompt
    token ids training used (PromptFormat.encode), and its EOS is the trained stop token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.eos_token != fmt.spec.stop_token:
        raise ExportError(f"{folder}: the tokenizer's EOS is {tokenizer.eos_token!r}, training stopped on {fmt.spec.stop_token!r}")
    for text in CHECK_MESSAGES:
        served = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                               tokenize=False)
        served_ids = list(tokenizer(served, add_special_tokens=False)["input_ids"])
        trained = fmt.encode(text)
        if served_ids != trained.prompt_ids:
            raise ExportError(
                f"{folder}: its chat template prompts {served!r} where training prompted {trained.prompt!r}"
                + ("" if served != trained.prompt else " (the same text: the format tokenizes with special tokens, "
                   "which chat clients do not add)")
            )


def export_model(adapter_dir: str | Path, out_dir: str | Path, *, report: dict | None = None,
                 dtype: str = "auto") -> Path:
    """Write the merged model folder at `out_dir` (under a temporary name, then renamed) and return it.

    `report`: the adapter's evaluation (trainers.evaluate), for the model card's metrics. `dtype`:
    of the saved weights; auto = what the engine computes in on this hardware (core/devices.py).
    """
    adapter_dir, out = Path(adapter_dir), Path(out_dir)
    fmt, method = PromptFormat.load(adapter_dir), adapter_method(adapter_dir)
    model = load_model(adapter_dir, dtype=dtype).merge_and_unload()
    model.config.eos_token_id = fmt.stop_id
    model.generation_config.eos_token_id = fmt.stop_id
    if fmt.tokenizer.eos_token != fmt.spec.stop_token:
        fmt.tokenizer.eos_token = fmt.spec.stop_token
    with atomic_folder(out, prefix=".tmp-export-") as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        fmt.save(tmp)  # tokenizer files with the served chat template, format.json
        (tmp / EXPORT_META).write_text(json.dumps({
            "adapter": str(adapter_dir.resolve()),
            "base_model": str(adapter_base(adapter_dir)),
            "method": method,
            "merged_into": base_weights(method),
            "dtype": str(model.dtype).removeprefix("torch."),
            "stop_token": fmt.spec.stop_token,
            "evaluation": report.get("files", {}).get("predictions") if report else None,
        }, indent=2) + "\n")
        write_model_card(tmp, adapter_dir, report, exported=True)
        check_served_prompt(tmp, fmt)
    return out


def find_evaluation(adapter_dir: str | Path) -> dict | None:
    """The adapter's latest evaluation report: in its folder (`curate eval`) or an `eval-*` folder
    beside it (the flow's); None when it was not evaluated."""
    adapter_dir = Path(adapter_dir).resolve()
    found = []
    for path in [adapter_dir / "report.json", *adapter_dir.parent.glob("eval-*/report.json")]:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if report.get("adapter") and Path(report["adapter"]).resolve() == adapter_dir and "tuned" in report.get("systems", {}):
            found.append((path.stat().st_mtime, report))
    return max(found, key=lambda f: f[0])[1] if found else None


def read_export_meta(folder: str | Path) -> dict:
    path = Path(folder) / EXPORT_META
    if not path.is_file():
        raise ExportError(f"{folder} has no {EXPORT_META}: not a folder written by `curate export`")
    return json.loads(path.read_text())
