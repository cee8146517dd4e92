"""Synthesis speed: pipeline overhead vs raw vLLM, vLLM batched vs transformers one at a time.

    .venv/bin/python bench/bench_synthesis.py --config configs/viggo.yaml --classes 3 --per-class 4
    .venv/bin/python bench/bench_synthesis.py --config configs/banking77.yaml --classes 3 --per-class 4

Measures, on the latest snapshot of the task and the configured (bundled) model:
1. `synthesize` end to end with one engine: seconds in the model (generation, label
   check) and everything else (render, parse, clean, dedupe, bookkeeping) = overhead;
   tokens/s and examples kept per minute.
2. raw `vllm.LLM.generate` on the same round-1 prompts and sampling settings (same
   seeds, same structured outputs, same packing), so overhead can be compared with
   generation time; and once more as a single call without per-request seeds, which is
   what the packing workaround (see synthesis.synthesize.VLLMGenerator) costs.
3. transformers `generate()` one prompt at a time on the first --hf-prompts of those
   prompts (same max_tokens, temperature, top_p and dtype; no structured outputs): tokens/s.
Writes bench/out/synthesis-<task>.json. Figures go to docs/synthesis.md; nothing here
is asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def raw_vllm(llm, gen, pending, *, seeds: bool) -> dict:
    from synthesis.generate import pack_by_tokens, sampling_params

    ids = gen.tokenize([p.request for p in pending])
    if seeds:
        params = [sampling_params(p.request) for p in pending]
        chunks = pack_by_tokens([len(x) for x in ids], budget=gen.budget, max_items=gen.batch_size)
    else:
        params = [_unseeded(p.request) for p in pending]
        chunks = [(0, len(ids))]
    started = time.perf_counter()
    tokens = 0
    for a, b in chunks:
        for res in llm.generate([{"prompt_token_ids": x} for x in ids[a:b]], params[a:b], use_tqdm=False):
            tokens += sum(len(o.token_ids) for o in res.outputs)
    s = time.perf_counter() - started
    return {"prompts": len(ids), "calls": len(chunks), "seconds": round(s, 3), "tokens": tokens, "tokens_per_s": round(tokens / s, 1)}


def _unseeded(req):
    from vllm import SamplingParams

    from synthesis.generate import structured_outputs

    s = req.sampling
    return SamplingParams(n=s["n"], temperature=s["temperature"], top_p=s["top_p"], max_tokens=s["max_tokens"],
                          repetition_penalty=s["repetition_penalty"], structured_outputs=structured_outputs(req.parse, req.choices))


def hf_one_at_a_time(model_dir: Path, tokenizer, pending, n: int, dtype: str = "auto") -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from core.devices import torch_dtype

    # the engine's dtype on this machine (auto): a bf16 baseline on a CPU without bf16
    # instructions would be slowed by the conversion, not by running one prompt at a time
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(dtype))
    model.eval()
    tokens, started = 0, time.perf_counter()
    for p in pending[:n]:
        s = p.request.sampling
        enc = tokenizer.apply_chat_template(p.request.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        torch.manual_seed(s["seed"])
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=s["max_tokens"], do_sample=s["temperature"] > 0,
                                 temperature=s["temperature"] or None, top_p=s["top_p"], pad_token_id=tokenizer.eos_token_id)
        tokens += out.shape[1] - enc["input_ids"].shape[1]
    s = time.perf_counter() - started
    return {"prompts": min(n, len(pending)), "seconds": round(s, 3), "tokens": tokens, "tokens_per_s": round(tokens / s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/viggo.yaml")
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--hf-prompts", type=int, default=8)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()


    from core.config import load_config
    from core.engine import make_llm
    from core.model import resolve_model
    from synthesis.generate import VLLMGenerator
    from synthesis.requests import render_generation_requests, rows_by_class
    from synthesis.synthesize import load_frames, resolve_templates, smallest_classes_plan, synthesis_settings, synthesize

    config = load_config(args.config)
    train, ev, where = load_frames(config)
    plan = smallest_classes_plan(train, args.classes, args.per_class)
    syn = synthesis_settings(config).model_copy(update={"enabled": True})
    result: dict = {"task": config.name, "snapshot": where, "plan": plan.select("label", "real", "synth").rows(),
                    "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}

    t0 = time.perf_counter()
    llm = make_llm(config)
    result["engine_start_s"] = round(time.perf_counter() - t0, 1)

    # 1. the stage, end to end (its own generator: one per run, as in the pipeline)
    rows, rejects, totals = synthesize(plan, train, ev, config, llm=llm, synthesis=syn)
    sec = totals["seconds"]
    model_s = sec["generate"] + sec["label_check"]
    result["synthesize"] = {
        **{k: totals[k] for k in ("requested", "generated", "kept", "rejected", "label_agreement", "by_reason")},
        "seconds": sec,
        "overhead_share_of_model_time": round(sec["overhead"] / model_s, 4) if model_s else None,
        "kept_per_minute": round(totals["kept"] / ((sec["total"] - sec["engine_start"]) / 60), 2),
    }

    # 2. raw vLLM on the same round-1 prompts and settings
    gen_tpl, _ = resolve_templates(config, syn)
    counts = {r["label"]: math.ceil(r["synth"] * syn.oversample) for r in plan.iter_rows(named=True)}
    pending = render_generation_requests(gen_tpl, counts, rows_by_class(train), config=config,
                                         labels=config.label_set() or sorted(set(train["label"])), seed=syn.seed, attempt=1)
    gen = VLLMGenerator(llm, batch_size=syn.batch_size)
    t0 = time.perf_counter()
    gen.generate([p.request for p in pending])
    wrapped = time.perf_counter() - t0
    result["raw_vllm_seeded_packed"] = raw_vllm(llm, gen, pending, seeds=True)
    result["raw_vllm_unseeded_one_call"] = raw_vllm(llm, gen, pending, seeds=False)
    result["generator_wrapper_s"] = round(wrapped, 3)
    result["generator_wrapper_overhead_vs_raw"] = round(wrapped / result["raw_vllm_seeded_packed"]["seconds"] - 1, 4)
    result["token_budget_per_call"] = gen.budget
    del llm

    # 3. transformers, one prompt at a time
    model_dir = resolve_model(config.model.path)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    result["transformers_one_at_a_time"] = hf_one_at_a_time(model_dir, tok, pending, args.hf_prompts, config.model.engine.dtype)
    result["vllm_vs_transformers_tokens_per_s"] = round(
        result["raw_vllm_seeded_packed"]["tokens_per_s"] / result["transformers_one_at_a_time"]["tokens_per_s"], 2)
    result["load_avg_at_end"] = os.getloadavg()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"synthesis-{config.name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
