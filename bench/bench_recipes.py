"""Training recipes for the first run, side by side: eval accuracy against minutes of training.

    .venv/bin/python bench/bench_recipes.py --snapshot banking77                  # every recipe below, in one run
    .venv/bin/python bench/bench_recipes.py --snapshot banking77 --only lr4e-3_b4 lr4e-3_b4_2ep
    .venv/bin/python bench/bench_recipes.py --plot bench/out/recipes.json        # redraw the PNG from a JSON

Each recipe trains a QLoRA adapter on the same snapshot, seed and format (ChatML without
the instruction, both cores) with `curate train`, then scores it on the snapshot's eval
split with `curate eval --merged` (tuned model only, free decoding). `--eval-snapshot`
evaluates on another snapshot's eval split (a recipe trained on the full official split,
scored on the sample's 385 eval rows). Writes bench/out/recipes.json and
bench/out/recipes.png (accuracy against minutes of training, one point per recipe).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CURATE = [sys.executable, "-m", "curate"]
BASE = ["method=qlora", "lora_r=16", "lora_alpha=32", "lora_dropout=0", "batch_size=4", "epochs=1", "eval_steps=1000",
        "val_size=128", "early_stopping_patience=0", "gradient_checkpointing=false", "cpu_threads=2",
        "format.template=templates/formats/chatml.jinja", "format.include_instruction=false"]
RECIPES = {
    "lr1e-3_b4": ["learning_rate=1e-3"],
    "lr2e-3_b4": ["learning_rate=2e-3"],
    "lr4e-3_b4": ["learning_rate=4e-3"],
    "lr6e-3_b4": ["learning_rate=6e-3"],
    "lr1e-3_b2": ["learning_rate=1e-3", "batch_size=2"],
    "lr2e-3_b2": ["learning_rate=2e-3", "batch_size=2"],
    "lr3e-3_b2": ["learning_rate=3e-3", "batch_size=2"],
    "lr2e-3_b1": ["learning_rate=2e-3", "batch_size=1"],
    "lr4e-3_b4_2ep": ["learning_rate=4e-3", "epochs=2"],
}


def run_recipe(name: str, sets: list[str], snapshot: str, eval_snapshot: str | None, out: Path) -> dict:
    folder = out / "recipes" / name
    flags = sum((["--set", s] for s in BASE + sets), [])
    started = time.perf_counter()
    subprocess.run([*CURATE, "train", snapshot, *flags, "--out", str(folder)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    train_wall = time.perf_counter() - started
    ev = ["--snapshot", eval_snapshot] if eval_snapshot else []
    subprocess.run([*CURATE, "eval", "--adapter", str(folder / "adapter"), *ev, "--no-baseline", "--no-guided", "--merged",
                    "--out", str(folder / "eval")], cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = json.loads((folder / "adapter" / "train_meta.json").read_text())
    tuned = json.loads((folder / "eval" / "report.json").read_text())["systems"]["tuned"]
    return {"recipe": name, "sets": sets, "snapshot": snapshot, "train_rows": meta["train_rows"], "steps": meta["global_step"],
            "fit_seconds": meta["fit_seconds"], "train_wall_seconds": round(train_wall, 1),
            "validation_loss": min(meta["eval_loss"]) if meta["eval_loss"] else None,
            "accuracy": round(tuned["accuracy"], 4), "format_compliance": round(tuned["format_compliance"], 4)}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    for r in results:
        x, y = r["fit_seconds"] / 60, r["accuracy"]
        ax.scatter(x, y, color="tab:green" if y >= 0.8 else "tab:blue")
        ax.annotate(f"{r['recipe']} ({r['train_rows']} rows)", (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.axhline(0.8, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlim(0, max(r["fit_seconds"] for r in results) / 60 * 1.6)  # room for the labels on the right
    ax.set_xlabel("minutes of training (2 CPU cores)")
    ax.set_ylabel("eval accuracy, free decoding (385 rows)")
    ax.set_title("QLoRA recipes for the first run: accuracy against training time")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", default="banking77", help="snapshot to train on (id, folder or dataset name)")
    ap.add_argument("--eval-snapshot", default=None, help="snapshot whose eval split scores the adapters")
    ap.add_argument("--only", nargs="*", default=None, help=f"recipes to run (default all: {', '.join(RECIPES)})")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--plot", type=Path, default=None, help="only redraw the PNG from this JSON")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.plot:
        data = json.loads(args.plot.read_text())
        plot(data["results"], args.plot.with_suffix(".png"))
        return
    results = []
    for name in args.only or list(RECIPES):
        results.append(run_recipe(name, RECIPES[name], args.snapshot, args.eval_snapshot, args.out))
        print(json.dumps(results[-1]), flush=True)
        (args.out / "recipes.json").write_text(json.dumps({"results": results}, indent=2) + "\n")
    plot(results, args.out / "recipes.png")


if __name__ == "__main__":
    main()
