"""Training on Ray Train against one process: tokens/s of 1 and 2 Ray workers beside in-process training.

    .venv/bin/python bench/bench_ray_train.py                          # banking77's latest snapshot, 24 steps each
    .venv/bin/python bench/bench_ray_train.py --steps 40 --out bench/out/ray_train.json

The recipe is configs/banking77.yaml's `train:` section (the shipped one), cut to --steps
optimizer steps with no validation pass, on the same rows, model and global batch in every
case. Cases, each in a process of its own on the machine's cores:

    local        runner local, cpu_threads = all cores: the baseline, what the flow runs
    ray-1        runner ray, 1 worker holding all cores (worker_cpus = cores)
    ray-N        runner ray, N workers (DDP over gloo), cores / N each

`tokens_per_s` is real (non-padding) tokens trained over the trainer's own time (fit_seconds:
from the first step to the last, over every worker); `wall_s` adds the process start, Ray's
start and each worker's model load. The machine's CPU flags are printed beside the figures.
Results go to docs/scaling.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_first_run import cpu  # noqa: E402
from core.config import load_config  # noqa: E402
from core.devices import usable_cpus  # noqa: E402
from core.model import resolve_model  # noqa: E402
from core.snapshot import resolve_snapshot  # noqa: E402

DRIVER = """
import sys
from core.train_config import TrainConfig
from trainers.ray_train import train_adapter
print("ADAPTER", train_adapter(sys.argv[1], sys.argv[2], TrainConfig.model_validate_json(sys.argv[4]), out_dir=sys.argv[3]))
"""


def cpu_flags() -> str:
    info = cpu()  # the first-run benchmark's reading of /proc/cpuinfo
    return f"{info['model']}; " + " ".join(info["flags"])


def run_case(name: str, snapshot: Path, cfg, out: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(snapshot), str(resolve_model(None)), str(out),
                           cfg.model_dump_json()], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    meta = json.loads((out / "adapter" / "train_meta.json").read_text())
    return {"case": name, "workers": cfg.workers if cfg.runner == "ray" else 1, "threads_per_process":
            cfg.cpu_threads, "steps": meta["global_step"], "train_tokens": meta["train_tokens"],
            "fit_s": meta["fit_seconds"], "tokens_per_s": round(meta["train_tokens"] / meta["fit_seconds"], 1),
            "wall_s": round(wall, 1), "last_loss": round(meta["train_loss"][-1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshot", default="banking77", help="snapshot folder or dataset name (its latest)")
    parser.add_argument("--config", default="configs/banking77.yaml", help="pipeline config whose train: recipe is used")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2, help="N of the ray-N case")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    os.chdir(ROOT)
    snapshot = resolve_snapshot(args.snapshot)
    cores = len(usable_cpus())
    recipe = load_config(args.config).train.trainer_config()
    base = recipe.model_copy(update={"max_steps": args.steps, "eval_steps": args.steps * 10, "val_size": 0,
                                     "logging_steps": max(1, args.steps // 4), "seed": 0})
    cases = {
        "local": base.model_copy(update={"runner": "local", "cpu_threads": cores}),
        "ray-1": base.model_copy(update={"runner": "ray", "workers": 1, "worker_cpus": cores, "cpu_threads": cores}),
        f"ray-{args.workers}": base.model_copy(update={
            "runner": "ray", "workers": args.workers, "worker_cpus": max(1, cores // args.workers),
            "cpu_threads": max(1, cores // args.workers)}),
    }
    print(f"CPU: {cpu_flags()}; {cores} usable cores; snapshot {snapshot.name}; {args.steps} steps of "
          f"global batch {base.batch_size}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-train-") as tmp:
        for name, cfg in cases.items():
            result = run_case(name, snapshot, cfg, Path(tmp) / name)
            results.append(result)
            print(json.dumps(result), flush=True)
    local = results[0]["tokens_per_s"]
    summary = {r["case"]: round(r["tokens_per_s"] / local, 3) for r in results[1:]}
    print(json.dumps({"tokens_per_s_over_local": summary}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cpu": cpu_flags(), "results": results, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
