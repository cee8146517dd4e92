"""Predict with a base model (+ a LoRA adapter) in the exact format the adapter was trained with.

    curate predict --adapter data/runs/adapters/banking77/<run>/adapter "my card is lost"
    curate predict --adapter DIR --vllm "my card is lost" "when does my card arrive"
    answers = predict(adapter_dir, ["my card is lost"], engine="vllm", engine_config=config.model.engine, seed=config.seed)

The prompt tokens come from `PromptFormat.encode` (the format, tokenizer and template read
from the adapter folder): the same ids the model was trained to continue. Two engines:

    transformers  greedy `generate`, batched with left padding; no server, works everywhere
    vLLM          the base model served with enable_lora and a LoRARequest for the adapter,
                  prompts passed as token ids (vLLM must run under an `if __name__ == "__main__"` guard)

Both stop on the format's stop token and return the parsed answer (text up to it, stripped),
in the dtype the evaluation engine computes in on this hardware (core/devices.py).
A QLoRA adapter is applied to the base it was trained on: the base's NF4 round trip (quantized
as training quantizes it, then dequantized), not the full-precision base (`load_base`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from core.config import EngineConfig
from core.devices import torch_dtype
from core.engine import build_llm
from core.io import atomic_folder
from core.train_config import QUANTIZED_BASE, served_as_lora, served_lora_rank
from trainers.format import PromptFormat, TaskInfo
from trainers.qlora import pick_device, quantization_config


@dataclass
class Generation:
    answer: str  # parsed: text before the stop token, stripped
    raw: str  # the decoded continuation, special tokens kept
    stopped: bool  # ended with the stop token (False: ran into max_new_tokens)
    logprob: float | None = None  # log-probability of the generated tokens under the model, stop token included


def adapter_base(adapter_dir: str | Path) -> Path:
    """The base model an adapter was trained on (train_meta.json, else adapter_config.json)."""
    adapter_dir = Path(adapter_dir)
    meta = adapter_dir / "train_meta.json"
    if meta.is_file():
        return Path(json.loads(meta.read_text())["base_model"])
    return Path(json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"])


def load_format(adapter_dir: str | Path | None, base_model: str | Path | None = None,
                task: TaskInfo | None = None, format_cfg=None) -> PromptFormat:
    """The adapter's own format; for a bare base model, the format built from the task."""
    if adapter_dir is not None:
        return PromptFormat.load(adapter_dir)
    if base_model is None or task is None:
        raise ValueError("a base model without an adapter needs base_model and task to build its format")
    return PromptFormat.from_model(base_model, task, format_cfg)


def adapter_method(adapter_dir: str | Path | None) -> str:
    """How an adapter was trained: "qlora", "lora8", "lora", "adalora" or "ia3" (train_meta.json; where it is not
    recorded, "ia3" or "adalora" for an adapter of that peft_type (adapter_config.json), else "lora")."""
    if adapter_dir is None:
        return "lora"
    meta, config = Path(adapter_dir) / "train_meta.json", Path(adapter_dir) / "adapter_config.json"
    if meta.is_file() and "method" in (recorded := json.loads(meta.read_text())):
        return recorded["method"]
    peft_type = json.loads(config.read_text()).get("peft_type") if config.is_file() else None
    return {"IA3": "ia3", "ADALORA": "adalora"}.get(peft_type, "lora")


def load_base(base: str | Path, device: str = "auto", *, method: str = "lora", dtype: str = "auto"):
    """The base model in the dtype the evaluation's engine computes in on this hardware (core/devices.py),
    or in `dtype`.

    `method`: the weights an adapter of that method was trained on. QLoRA trains its adapter on the
    base's NF4 round trip (lora8 on its int8 one), not on the base, and the adapter learns around the
    quantization error; served on the full-precision base, every layer is off by that error
    (banking77's full split, 600 test rows: 0.808 accuracy on the base, 0.838 on the round trip;
    docs/training.md). Loaded as training
    loads it (trainers.qlora.quantization_config) and dequantized, it is the base the adapter knows,
    in plain weights that any engine serves.
    """
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    dtype = torch_dtype(dtype, device=device)
    quantized = method in QUANTIZED_BASE
    kwargs = {"quantization_config": quantization_config(dtype, method)} if quantized else {}
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype, device_map={"": device}, **kwargs)
    return model.dequantize() if quantized else model


def load_model(adapter_dir: str | Path | None, base_model: str | Path | None = None, device: str = "auto",
               dtype: str = "auto"):
    """The base (as the adapter was trained on it) with the adapter, for inference."""
    base = Path(base_model) if base_model is not None else adapter_base(adapter_dir)
    model = load_base(base, device, method=adapter_method(adapter_dir), dtype=dtype)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    return model


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, dtype: str = "auto") -> Path:
    """The base with the adapter folded into its weights (peft merge_and_unload), saved as a model folder.

    An engine serves it without LoRA: the same weights, in the dtype the engine computes in (or
    `dtype`). On a CPU that is much faster than a LoRARequest, whose vLLM ops (plain torch there)
    gather a copy of the adapter's weights for every token. A bf16 merge rounds W + BA to bf16,
    which moves the logits a little (banking77, 600 test rows: the same accuracy as float32 and
    as the unmerged adapter; docs/training.md). Written under a temporary name, then renamed; a
    folder already there is reused. A QLoRA adapter is folded into the base it was trained on
    (`load_base`).
    """
    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    return _save_model_folder(load_model(adapter_dir, dtype=dtype).merge_and_unload(), adapter_dir, out)


def lora_base(adapter_dir: str | Path, out_dir: str | Path, base_model: str | Path | None = None) -> Path:
    """The model folder a vLLM engine serves the adapter on with a LoRARequest: the base the adapter
    was trained on. For a LoRA adapter that is the base itself; for a QLoRA adapter its NF4 round
    trip, for a lora8 one its int8 round trip (`load_base`), written to out_dir (under a temporary
    name, then renamed; reused once there)."""
    base = Path(base_model) if base_model is not None else adapter_base(adapter_dir)
    method = adapter_method(adapter_dir)
    if method not in QUANTIZED_BASE:
        return base
    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    return _save_model_folder(load_base(base, method=method), adapter_dir, out)


def _save_model_folder(model, adapter_dir: str | Path, out: Path) -> Path:
    with atomic_folder(out, prefix=".tmp-model-") as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        PromptFormat.load(adapter_dir).tokenizer.save_pretrained(str(tmp))
    return out


def generate(model, fmt: PromptFormat, prompts: Sequence[list[int]], *, max_new_tokens: int = 32,
             batch_size: int = 16, on_done: Callable[[int], None] | None = None) -> list[Generation]:
    """Greedy decoding of token-id prompts with transformers (left-padded batches); `on_done(n)` after each."""
    import torch

    pad = fmt.pad_id()
    out: list[Generation] = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                eos_token_id=fmt.stop_id, pad_token_id=pad, output_logits=True, return_dict_in_generate=True,
            )
        # each step's log-probabilities from the raw logits (before any logits processor), as vLLM reports them
        steps = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in gen.logits], dim=1)
        for j, row in enumerate(gen.sequences[:, width:].tolist()):
            stopped = fmt.stop_id in row
            if stopped:
                row = row[: row.index(fmt.stop_id) + 1]
            raw = fmt.tokenizer.decode(row, skip_special_tokens=False)
            logprob = float(sum(steps[j, k, t] for k, t in enumerate(row)))
            out.append(Generation(fmt.parse(raw), raw, stopped, logprob))
        if on_done is not None:
            on_done(len(chunk))
    return out


def generate_vllm(base_model: str | Path, fmt: PromptFormat, prompts: Sequence[list[int]], *,
                  adapter_dir: str | Path | None = None, max_new_tokens: int = 32, lora_rank: int = 16,
                  engine_config: EngineConfig | None = None, seed: int = 0, llm=None,
                  choices: Sequence[str] | None = None, on_done: Callable[[int], None] | None = None,
                  chunk: int = 96) -> list[Generation]:
    """Greedy decoding with vLLM; the adapter is served through a LoRARequest on the base model.

    With `on_done`, the prompts go to the engine `chunk` at a time and `on_done(n)` follows each
    chunk (progress lines); without it, in one call.

    `llm` is an engine already built (evaluation builds one per served model); otherwise one is
    built from `engine_config` (a config's `model.engine`) and `seed`. `choices` constrains the
    answer to one of these strings (vLLM structured outputs, guided choice): a classifier then
    always answers with a known label.
    """
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import StructuredOutputsParams

    if llm is None:
        llm = build_llm(base_model, engine_config or EngineConfig(), seed=seed,
                        enable_lora=adapter_dir is not None, max_lora_rank=served_lora_rank(lora_rank), max_loras=1)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=[fmt.stop_id],
                            skip_special_tokens=False, include_stop_str_in_output=True,
                            logprobs=0,  # the chosen tokens' own log-probabilities (raw: before any constraint)
                            structured_outputs=StructuredOutputsParams(choice=list(choices)) if choices else None)
    lora = LoRARequest("adapter", 1, str(Path(adapter_dir).resolve())) if adapter_dir is not None else None
    requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
    step = chunk if on_done is not None else max(len(requests), 1)
    outputs = []
    for start in range(0, len(requests), step):
        outputs += llm.generate(requests[start:start + step], params, use_tqdm=False, lora_request=lora)
        if on_done is not None:
            on_done(len(requests[start:start + step]))
    gens = []
    for o in outputs:
        c = o.outputs[0]
        ids = list(c.token_ids)
        stopped = bool(ids) and ids[-1] == fmt.stop_id
        raw = fmt.tokenizer.decode(ids, skip_special_tokens=False)
        logprob = sum(step[t].logprob for step, t in zip(c.logprobs, ids)) if c.logprobs is not None else None
        gens.append(Generation(fmt.parse(raw), raw, stopped, logprob))
    return gens


def adapter_rank(adapter_dir: str | Path | None) -> int:
    """A LoRA adapter's rank; 8 (an engine's max_lora_rank when it serves no LoRA request) for no adapter or one served merged only."""
    if adapter_dir is None or not served_as_lora(adapter_method(adapter_dir)):
        return 8
    return int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["r"])


def predict(adapter_dir: str | Path | None, inputs: list[str], *, base_model: str | Path | None = None,
            task: TaskInfo | None = None, engine: str = "transformers", max_new_tokens: int = 32,
            shots: Sequence[tuple[str, str]] = (), engine_config: EngineConfig | None = None, seed: int = 0) -> list[str]:
    """Answers for raw inputs, formatted exactly as in training (the adapter folder's format).

    `engine` is "transformers" or "vllm"; a vLLM engine is built from `engine_config` and `seed`."""
    fmt = load_format(adapter_dir, base_model, task)
    prompts = [fmt.encode(x, shots=shots).prompt_ids for x in inputs]
    base = Path(base_model) if base_model is not None else adapter_base(adapter_dir)
    if engine == "vllm":
        import tempfile

        # The engine holds the weights once started: the QLoRA base's folder goes when it has answered.
        # An adapter vLLM cannot serve as a LoRA request (IA3, AdaLoRA) is served merged into its base.
        with tempfile.TemporaryDirectory(prefix="curate-lora-base-") as tmp:
            as_lora = adapter_dir is not None and served_as_lora(adapter_method(adapter_dir))
            if adapter_dir is None:
                served = base
            elif as_lora:
                served = lora_base(adapter_dir, Path(tmp) / "base", base)
            else:
                served = merge_adapter(adapter_dir, Path(tmp) / "merged", dtype=(engine_config or EngineConfig()).dtype)
            gens = generate_vllm(served, fmt, prompts, adapter_dir=adapter_dir if as_lora else None, max_new_tokens=max_new_tokens,
                                 lora_rank=adapter_rank(adapter_dir), engine_config=engine_config, seed=seed)
    else:
        gens = generate(load_model(adapter_dir, base), fmt, prompts, max_new_tokens=max_new_tokens)
    return [g.answer for g in gens]
