"""Training benchmarks: peak memory QLoRA vs LoRA, tokens/s with packing vs padded batches, and dtype auto vs bf16.

    .venv/bin/python bench/bench_train.py                      # banking77 latest snapshot, 6 steps each
    .venv/bin/python bench/bench_train.py --steps 10 --threads 2 --out bench/out/train.json

Each configuration runs in its own process (peak memory is per process) through the real
trainer code (trainers.qlora setup + fit) on the same rows, model and batch size. Memory
is the process's peak resident set on CPU (torch.cuda.max_memory_allocated on GPU), also
given above the process's footprint just before the model loads (the libraries already
imported), which isolates what the model, activations and optimizer add. On CPU the peak
is also split: while loading (a 4-bit load passes through the full-precision weights) and
while training (VmHWM reset after the load), so the training peak compares what each
method holds as it trains.
Tokens/s counts real (non-padding) tokens trained; `slots_per_token` the positions the batches
hold per real token, and the summary's `padding_ceiling` their ratio, padded over packed: the
speed-up packing gives where a position costs the same in both. The `_flat` cases pack as TRL's
padding-free collator does, every packed row of a batch joined into one (the trainer's
packing before trainers.packing kept the rows apart): the baseline of the packing figures.
The `_allpos` cases run TRL's LM head over every position, its default on the CPU, where the
trainer runs it only on labelled positions (trainers.sft).
The cases use `dtype: auto` (core/devices.py) except the `_bf16` ones, which force bf16:
for `qlora_packed_bf16` the compute (on a CPU without bf16 instructions the two differ by
the software conversion), for `lora_packed_bf16` the base weights too, the issue's
baseline. Cases checkpoint gradients (TrainConfig's default) unless named `_nogc`. The `_noinstr`
cases train the format without the instruction (format.include_instruction: false). The `_mmap`
cases fix glibc's mmap threshold at 128 KB (train.cpu_malloc_mmap_threshold: 131072), where the
others leave malloc its adaptive default.
`--model` trains any local model folder instead of the bundled one: bench/shape_model.py writes
bigger shapes of the same family (random weights: for memory and speed only). `--rows-per-slot 1`
trains one example a step, where the weights rather than the activations make the peak.
`--tensor-peak` adds, in a second process per case, the peak of live tensor bytes while training:
the CPU counterpart of torch.cuda.max_memory_allocated, free of how glibc's heap holds freed
memory (torch's profiler records every tensor the steps create or touch: weights, adapters,
optimizer state, activations, gradients). It is slow (the profiler records every op), so it
runs apart from the timed, RSS-measured process.
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

NO_INSTRUCTION = {"template": "templates/formats/chatml.jinja", "include_instruction": False}
MMAP = 131072
CASES = {
    "qlora_packed": {"method": "qlora", "packing": True},
    "lora_packed": {"method": "lora", "packing": True},
    "qlora_padded": {"method": "qlora", "packing": False},
    # TRL's padding-free batches (every packed row joined into one), the trainer's packing before
    # trainers.packing kept the rows apart: the baseline of the packing figures
    "qlora_packed_flat": {"method": "qlora", "packing": True, "flat_batches": True},
    "lora_packed_flat": {"method": "lora", "packing": True, "flat_batches": True},
    "lora_padded": {"method": "lora", "packing": False},
    # A quarter of --batch in packed rows: about the tokens of a padded batch of --batch banking77
    # examples (~4 examples a 256-token row), so a step of each holds the same work
    "qlora_packed_quarter": {"method": "qlora", "packing": True, "batch_fraction": 0.25},
    # Padded batches of 4x --batch examples: about the tokens of --batch packed rows, so a step of each
    # holds the same work and the same per-step costs (the optimizer step, 4-bit dequantization)
    "qlora_padded_x4": {"method": "qlora", "packing": False, "batch_fraction": 4.0, "rows_per_slot": 1},
    # TRL's LM head over every position, its default on the CPU (the trainer runs it only where a label
    # is, trainers.sft): the baseline of the head figures
    "qlora_packed_allpos": {"method": "qlora", "packing": True, "all_positions": True},
    "qlora_padded_allpos": {"method": "qlora", "packing": False, "all_positions": True},
    "qlora_packed_bf16": {"method": "qlora", "packing": True, "dtype": "bfloat16"},
    # The memory baseline is LoRA on a bf16 base; `auto` gives a float32 base on a CPU without bf16.
    "lora_packed_bf16": {"method": "lora", "packing": True, "dtype": "bfloat16"},
    # The cases above checkpoint gradients (TrainConfig's default); these keep every block's activations,
    # as the shipped CPU config does.
    "qlora_packed_nogc": {"method": "qlora", "packing": True, "gradient_checkpointing": False},
    "lora_packed_nogc": {"method": "lora", "packing": True, "gradient_checkpointing": False},
    "lora_packed_bf16_nogc": {"method": "lora", "packing": True, "dtype": "bfloat16", "gradient_checkpointing": False},
    # The tuned model's format without the instruction (format.include_instruction: false, ChatML with no
    # system turn): banking77 rows of ~28 tokens instead of ~57, as configs/banking77_full.yaml trains.
    # ~9 of them fill a 256-token row, so the cases draw from 9 rows per batch slot a step instead of 4.
    "qlora_packed_noinstr": {"method": "qlora", "packing": True, "format": NO_INSTRUCTION, "rows_per_slot": 9},
    "qlora_padded_noinstr": {"method": "qlora", "packing": False, "format": NO_INSTRUCTION, "rows_per_slot": 9},
    "lora_packed_noinstr_nogc": {"method": "lora", "packing": True, "format": NO_INSTRUCTION, "rows_per_slot": 9,
                                 "gradient_checkpointing": False},
    "lora_padded_noinstr_nogc": {"method": "lora", "packing": False, "format": NO_INSTRUCTION, "rows_per_slot": 9,
                                 "gradient_checkpointing": False},
    # glibc's mmap threshold fixed at 128 KB (train.cpu_malloc_mmap_threshold: 131072) instead of its adaptive
    # default: a step's freed tensors go back to the system instead of settling in the heap
    "qlora_packed_mmap": {"method": "qlora", "packing": True, "cpu_malloc_mmap_threshold": MMAP},
    "lora_packed_mmap": {"method": "lora", "packing": True, "cpu_malloc_mmap_threshold": MMAP},
    "qlora_packed_bf16_mmap": {"method": "qlora", "packing": True, "dtype": "bfloat16", "cpu_malloc_mmap_threshold": MMAP},
    "lora_packed_bf16_mmap": {"method": "lora", "packing": True, "dtype": "bfloat16", "cpu_malloc_mmap_threshold": MMAP},
}


def status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: now, VmHWM: peak since start or the last reset), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb() -> float:
    return status_mb("VmRSS")


def tensor_peak_mb(prof) -> float:
    """Peak of live CPU tensor bytes in a torch.profiler trace (profile_memory, record_shapes, with_stack).

    The profiler's memory timeline (the data behind its export_memory_timeline; a private API)
    lists every tensor the profiled code touched that already existed, then each one it created
    or freed, in order; the running sum of the sizes peaks where the steps held the most."""
    from torch.profiler._memory_profiler import Action

    live = peak = 0
    for _, action, (key, _), size in prof._memory_profile().timeline:
        if key.device.type != "cpu":
            continue
        if action in (Action.PREEXISTING, Action.CREATE):
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak / 2**20


def slots_per_token(trainer) -> float:
    """Token positions the case's batches hold per real (non-padding) token, over one pass of its
    training data: what a step computes for each token it trains. A padded batch pads to its
    longest example; a batch of packed rows to its longest row. The ratio of two cases' figures is
    the speed-up packing would give if a position cost the same in both (the padding ceiling)."""
    from trainers.packing import real_tokens

    slots = real = 0
    for batch in trainer.get_train_dataloader():
        slots += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else real_tokens(batch["position_ids"])
    return slots / real


def run_one(case: str, snapshot: str, steps: int, batch: int, threads: int, out_dir: Path, model: str | None = None,
            rows_per_slot: int | None = None, tensor_peak: bool = False) -> dict:
    # The libraries load before the baseline: every case loads them alike (~290 MB here), and
    # what the cases compare is what the model and its training add.
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch
    from trl import SFTTrainer  # noqa: F401

    from core.devices import resolve_dtype
    from core.model import resolve_model
    from core.train_config import TrainConfig
    from trainers.qlora import fit, peak_memory_mb, reset_peak_memory, setup

    torch.set_num_threads(threads)
    spec = dict(CASES[case])
    flat = spec.pop("flat_batches", False)
    all_positions = spec.pop("all_positions", False)
    batch = max(1, round(batch * spec.pop("batch_fraction", 1.0)))
    per_slot = spec.pop("rows_per_slot", 4)  # ~4 banking77 rows fill a 256-token packed row
    rows = steps * batch * (rows_per_slot or per_slot)
    cfg = TrainConfig(
        **spec, max_steps=steps, batch_size=batch, val_size=0, early_stopping_patience=0,
        eval_steps=10**6, logging_steps=1, max_seq_len=256, max_train_examples=rows, seed=0,
    )
    before = rss_mb()
    model_dir = resolve_model(model)
    run = setup(snapshot, model_dir, cfg, out_dir=out_dir / case)
    loaded = rss_mb()
    load_peak = status_mb("VmHWM")
    reset = run.device == "cpu" and reset_peak_memory("cpu")  # so the training peak excludes loading
    if tensor_peak:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
            fit(run, resume=False, packed_rows=not flat, labelled_only=not all_positions)
        return {"case": case, "tensor_peak_mb": round(tensor_peak_mb(prof), 1)}
    started = time.perf_counter()
    fit(run, resume=False, packed_rows=not flat, labelled_only=not all_positions)
    seconds = time.perf_counter() - started
    train_peak = status_mb("VmHWM") if reset else None
    logs = [h for h in run.trainer.state.log_history if "num_tokens" in h]
    tokens = float(logs[-1]["num_tokens"]) if logs else float("nan")
    # the whole process's peak: on a CPU its resident set since start (peak_memory_mb reads since the last reset)
    peak = peak_memory_mb(run.device) if run.device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "case": case, **CASES[case], "model": model_dir.name, "rows_per_slot": rows_per_slot or per_slot, "dtype": resolve_dtype(cfg.dtype, device=run.device), "device": run.device, "steps": steps, "batch_size": batch, "threads": threads,
        "peak_mb": round(peak, 1), "peak_above_start_mb": round(peak - before, 1) if run.device == "cpu" else None,
        "after_load_above_start_mb": round(loaded - before, 1),
        # Peak while loading (a 4-bit load passes through the full-precision weights) and while training.
        "load_peak_above_start_mb": round(load_peak - before, 1) if run.device == "cpu" else None,
        "train_peak_above_start_mb": round(train_peak - before, 1) if train_peak is not None else None,
        "fit_seconds": round(seconds, 1),
        "slots_per_token": round(slots_per_token(run.trainer), 3),
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
    ap.add_argument("--model", default=None, help="a local model folder instead of the bundled one "
                    "(bench/shape_model.py writes bigger shapes of it for the memory cases)")
    ap.add_argument("--rows-per-slot", type=int, default=None,
                    help="banking77 rows per packed row and step (default 4, about a full 256-token row); "
                         "1: one example a step, where weights rather than activations make the peak")
    ap.add_argument("--tensor-peak", action="store_true",
                    help="CPU: also the peak of live tensor bytes while training (a second, profiled process per case)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    from core.snapshot import resolve_snapshot

    snapshot = str(resolve_snapshot(a.snapshot))
    work = ROOT / "bench/out/train_runs"
    if a.one:
        print("RESULT " + json.dumps(run_one(a.one, snapshot, a.steps, a.batch, a.threads, work, a.model, a.rows_per_slot,
                                             a.tensor_peak)))
        return

    def one(case: str, tensor_peak: bool) -> dict:
        proc = subprocess.run([sys.executable, __file__, "--one", case, "--snapshot", snapshot, "--steps", str(a.steps),
                               "--batch", str(a.batch), "--threads", str(a.threads),
                               *(["--model", a.model] if a.model else []),
                               *(["--rows-per-slot", str(a.rows_per_slot)] if a.rows_per_slot else []),
                               *(["--tensor-peak"] if tensor_peak else [])],
                              capture_output=True, text=True, cwd=ROOT)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{case} failed:\n{proc.stderr[-3000:]}")
        return json.loads(line[7:])

    results = []
    for case in a.cases:
        results.append(one(case, False))
        if a.tensor_peak and results[-1]["device"] == "cpu":
            results[-1]["tensor_peak_mb"] = one(case, True)["tensor_peak_mb"]
        print(results[-1], flush=True)
    by = {r["case"]: r for r in results}
    summary = {}
    if {"qlora_packed", "lora_packed"} <= by.keys():
        q, l = by["qlora_packed"], by["lora_packed"]
        summary["peak_qlora_over_lora"] = round(q["peak_mb"] / l["peak_mb"], 3)
        if q["peak_above_start_mb"] and l["peak_above_start_mb"]:
            summary["peak_above_start_qlora_over_lora"] = round(q["peak_above_start_mb"] / l["peak_above_start_mb"], 3)
    for q, l in (("qlora_packed", "lora_packed"), ("qlora_packed", "lora_packed_bf16"), ("qlora_packed_bf16", "lora_packed_bf16"),
                 ("qlora_packed_mmap", "lora_packed_mmap"), ("qlora_packed_bf16_mmap", "lora_packed_bf16_mmap"),
                 ("qlora_packed_nogc", "lora_packed_nogc"), ("qlora_packed_nogc", "lora_packed_bf16_nogc")):
        if {q, l} <= by.keys() and by[q]["train_peak_above_start_mb"] and by[l]["train_peak_above_start_mb"]:
            summary[f"train_peak_above_start_{q}_over_{l}"] = round(
                by[q]["train_peak_above_start_mb"] / by[l]["train_peak_above_start_mb"], 3)
        if {q, l} <= by.keys() and by[q].get("tensor_peak_mb") and by[l].get("tensor_peak_mb"):
            summary[f"tensor_peak_{q}_over_{l}"] = round(by[q]["tensor_peak_mb"] / by[l]["tensor_peak_mb"], 3)
    for m in ("qlora", "lora"):
        for packed, base in ((f"{m}_packed", f"{m}_padded"), (f"{m}_packed_flat", f"{m}_padded"),
                             (f"{m}_packed", f"{m}_packed_flat"), (f"{m}_packed_quarter", f"{m}_padded"),
                             (f"{m}_packed", f"{m}_padded_x4"), (f"{m}_packed_noinstr", f"{m}_padded_noinstr")):
            if {packed, base} <= by.keys():
                summary[f"tokens_per_s_{packed}_over_{base}"] = round(
                    by[packed]["tokens_per_s"] / by[base]["tokens_per_s"], 3)
                if "padded" in base:  # the most packing can gain where every position costs the same
                    summary[f"padding_ceiling_{packed}_over_{base}"] = round(
                        by[base]["slots_per_token"] / by[packed]["slots_per_token"], 3)
    for case in ("qlora_packed", "qlora_padded"):
        if {case, f"{case}_allpos"} <= by.keys():
            summary[f"tokens_per_s_{case}_over_{case}_allpos"] = round(
                by[case]["tokens_per_s"] / by[f"{case}_allpos"]["tokens_per_s"], 3)
    for case in ("qlora_packed", "lora_packed", "qlora_packed_bf16", "lora_packed_bf16"):
        if {case, f"{case}_mmap"} <= by.keys():
            summary[f"tokens_per_s_{case}_mmap_over_{case}"] = round(
                by[f"{case}_mmap"]["tokens_per_s"] / by[case]["tokens_per_s"], 3)
    if {"qlora_packed", "qlora_packed_bf16"} <= by.keys():
        summary["tokens_per_s_auto_over_bf16"] = round(
            by["qlora_packed"]["tokens_per_s"] / by["qlora_packed_bf16"]["tokens_per_s"], 3)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "summary": summary}, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
