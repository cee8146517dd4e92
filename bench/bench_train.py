"""Training benchmarks: peak memory QLoRA vs LoRA, tokens/s with packing vs padded batches, and dtype auto vs bf16.

    .venv/bin/python bench/bench_train.py                      # banking77 latest snapshot, 6 steps each
    .venv/bin/python bench/bench_train.py --steps 10 --threads 2 --out bench/out/train.json

Each configuration runs in its own process (peak memory is per process) through the real
trainer code (trainers.qlora setup + fit) on the same rows, model and batch size. Memory
is the process's peak resident set on CPU (torch.cuda.max_memory_allocated on GPU), also
given above the process's footprint just before the model loads, which isolates what the
model, activations and optimizer add. Tokens/s counts real (non-padding) tokens trained.
The cases use `dtype: auto` (curate/devices.py) except `qlora_packed_bf16`, which forces
bf16 compute: on a CPU without bf16 instructions the two differ by the software conversion.
Results go to docs/training.md by hand; timings on the shared CPU machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = {
    "qlora_packed": {"method": "qlora", "packing": True},
    "lora_packed": {"method": "lora", "packing": True},
    "qlora_padded": {"method": "qlora", "packing": False},
    "qlora_packed_bf16": {"method": "qlora", "packing": True, "dtype": "bfloat16"},
}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_one(case: str, snapshot: str, steps: int, batch: int, threads: int, out_dir: Path) -> dict:
    import torch

    from curate.devices import resolve_dtype
    from curate.model import resolve_model
    from trainers.config import TrainConfig
    from trainers.qlora import fit, peak_memory_mb, setup

    torch.set_num_threads(threads)
    cfg = TrainConfig(
        **CASES[case], max_steps=steps, batch_size=batch, val_size=0, early_stopping_patience=0,
        eval_steps=10**6, logging_steps=1, max_seq_len=256, max_train_examples=steps * batch * 4, seed=0,
    )
    before = rss_mb()
    run = setup(snapshot, resolve_model(None), cfg, out_dir=out_dir / case)
    loaded = rss_mb()
    started = time.perf_counter()
    fit(run, resume=False)
    seconds = time.perf_counter() - started
    logs = [h for h in run.trainer.state.log_history if "num_tokens" in h]
    tokens = float(logs[-1]["num_tokens"]) if logs else float("nan")
    peak = peak_memory_mb(run.device)
    return {
        "case": case, **CASES[case], "dtype": resolve_dtype(cfg.dtype, device=run.device), "device": run.device, "steps": steps, "batch_size": batch, "threads": threads,
        "peak_mb": round(peak, 1), "peak_above_start_mb": round(peak - before, 1) if run.device == "cpu" else None,
        "after_load_above_start_mb": round(loaded - before, 1), "fit_seconds": round(seconds, 1),
        "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1), "s_per_step": round(seconds / steps, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshot", default="banking77")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--out", default="bench/out/train.json")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    from curate.snapshot import resolve_snapshot

    snapshot = str(resolve_snapshot(a.snapshot))
    work = ROOT / "bench/out/train_runs"
    if a.one:
        print("RESULT " + json.dumps(run_one(a.one, snapshot, a.steps, a.batch, a.threads, work)))
        return
    results = []
    for case in a.cases:
        proc = subprocess.run([sys.executable, __file__, "--one", case, "--snapshot", snapshot, "--steps", str(a.steps),
                               "--batch", str(a.batch), "--threads", str(a.threads)],
                              capture_output=True, text=True, cwd=ROOT)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{case} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[7:]))
        print(results[-1], flush=True)
    by = {r["case"]: r for r in results}
    summary = {}
    if {"qlora_packed", "lora_packed"} <= by.keys():
        q, l = by["qlora_packed"], by["lora_packed"]
        summary["peak_qlora_over_lora"] = round(q["peak_mb"] / l["peak_mb"], 3)
        if q["peak_above_start_mb"] and l["peak_above_start_mb"]:
            summary["peak_above_start_qlora_over_lora"] = round(q["peak_above_start_mb"] / l["peak_above_start_mb"], 3)
    if {"qlora_packed", "qlora_padded"} <= by.keys():
        summary["tokens_per_s_packed_over_padded"] = round(
            by["qlora_packed"]["tokens_per_s"] / by["qlora_padded"]["tokens_per_s"], 3)
    if {"qlora_packed", "qlora_packed_bf16"} <= by.keys():
        summary["tokens_per_s_auto_over_bf16"] = round(
            by["qlora_packed"]["tokens_per_s"] / by["qlora_packed_bf16"]["tokens_per_s"], 3)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "summary": summary}, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
