"""Where imbalance hurts: does balancing + synthesis beat curated-but-unbalanced training on banking77?

    .venv/bin/python bench/bench_imbalanced.py                                  # the ablation, then the verdict
    .venv/bin/python bench/bench_imbalanced.py --report data/runs/banking77_imbalanced/ablations/<key>/ablation.json

Runs `curate ablate --config configs/banking77_imbalanced.yaml --variants dedupe,synthesis --seeds 0,1,2`
(the same recipe, seeds and eval rows for both variants, in one run) and checks the issue's target on its
report: synthesis over dedupe by >= 3 points macro-F1 and >= 10 points recall on the rarest quarter of
intents (by rows before curation), each beyond the seeds' spread (the lowest synthesis seed above the
highest dedupe seed). Writes bench/out/imbalanced.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "configs/banking77_imbalanced.yaml"
TARGETS = {"macro_f1": 0.03, "smallest_quarter_recall": 0.10}


def run_ablation(seeds: str) -> Path:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "curate", "ablate", "--config", CONFIG, "--variants", "dedupe,synthesis", "--seeds", seeds]
    subprocess.run(cmd, cwd=ROOT, check=True)
    print(f"ablation: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return max((ROOT / "data/runs/banking77_imbalanced/ablations").glob("*/ablation.json"), key=lambda p: p.stat().st_mtime)


def verdict(report: dict) -> dict:
    by = {v["variant"]: v for v in report["variants"]}
    base, synth = by["dedupe"], by["synthesis"]
    rows = {}
    for metric, target in TARGETS.items():
        b, s = base["summary"][metric], synth["summary"][metric]
        delta = s["mean"] - b["mean"]
        rows[metric] = {"dedupe": b, "synthesis": s, "delta": round(delta, 4), "target": target,
                        "beyond_spread": s["min"] > b["max"], "met": delta >= target and s["min"] > b["max"]}
    return {"report": report["files"]["json"] if "files" in report else None, "seeds": report["seeds"],
            "train_rows": {"dedupe": base["train_rows"], "synthesis": synth["train_rows"]},
            "synthetic_rows": synth["synthetic_rows"], "smallest_quarter": report["smallest_quarter"],
            "metrics": rows, "met": all(r["met"] for r in rows.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", type=Path, help="an ablation.json already written (skips the ablation)")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    path = args.report or run_ablation(args.seeds)
    result = verdict(json.loads(path.read_text()))
    out = ROOT / "bench/out/imbalanced.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"train rows: dedupe {result['train_rows']['dedupe']}, synthesis {result['train_rows']['synthesis']} "
          f"({result['synthetic_rows']} synthetic); seeds {result['seeds']}")
    print("| metric | dedupe mean (min-max) | synthesis mean (min-max) | delta | target | beyond spread | met |")
    print("|---|---|---|---:|---:|---|---|")
    for metric, r in result["metrics"].items():
        d, s = r["dedupe"], r["synthesis"]
        print(f"| {metric} | {d['mean']:.3f} ({d['min']:.3f}-{d['max']:.3f}) | {s['mean']:.3f} ({s['min']:.3f}-{s['max']:.3f}) "
              f"| {r['delta']:+.3f} | {r['target']:+.2f} | {'yes' if r['beyond_spread'] else 'no'} | {'yes' if r['met'] else 'no'} |")
    print(f"target met: {'yes' if result['met'] else 'no'}")


if __name__ == "__main__":
    main()
