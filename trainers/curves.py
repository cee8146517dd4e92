"""Learning curves: train on nested fractions of the train split, evaluate each, plot metric vs examples.

    curate sweep banking77 --config configs/train/smollm2-135m-qlora.yaml
    curate sweep banking77 --fractions 0.25,0.5,1.0 --set max_steps=100 --engine vllm

Fractions are nested (trainers.qlora.split_rows: the first share of one seeded permutation,
the validation hold-out fixed), so each point adds examples to the previous one. Every
point is a full `train` + `evaluate` (tuned only; the base model is the 0-example point
when `--baseline`). Writes curves.json and curves.png into the output folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from core.train_config import TrainConfig
from trainers.evaluate import evaluate
from trainers.qlora import read_meta, train

PRIMARY = {"classification": ("accuracy", "macro_f1"), "generation": ("exact_match", "slot_f1")}


def learning_curve(snapshot_dir: str | Path, model_dir: str | Path, train_cfg: TrainConfig, out_dir: str | Path, *,
                   fractions: Sequence[float] = (0.25, 0.5, 1.0), task_cfg: Any = None, engine: str = "vllm",
                   baseline: bool = False, max_examples: int | None = None,
                   train_fn: Callable | None = None, evaluate_fn: Callable | None = None) -> dict:
    """Train + evaluate per fraction; returns {points: [...], files: {...}} and writes curves.json/png."""
    train_fn = train_fn or train
    evaluate_fn = evaluate_fn or evaluate
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    points = []
    if baseline:
        rep = evaluate_fn(None, snapshot_dir, base_model=model_dir, task_cfg=task_cfg, engine=engine, shots=0,
                          max_examples=max_examples, out_dir=out / "base")
        points.append({"fraction": 0.0, "train_examples": 0, "kind": rep["task_kind"],
                       "metrics": rep["systems"]["base zero-shot"]})
    for frac in sorted(fractions):
        cfg = train_cfg.model_copy(update={"train_fraction": frac})
        adapter = train_fn(snapshot_dir, model_dir, cfg, task_cfg, out / f"fraction-{frac:g}")
        rep = evaluate_fn(adapter, snapshot_dir, engine=engine, baseline=False, max_examples=max_examples)
        meta = read_meta(adapter)
        points.append({"fraction": frac, "train_examples": meta["train_rows"], "kind": rep["task_kind"],
                       "adapter": str(adapter), "metrics": rep["systems"]["tuned"]})
    result = {"snapshot": str(snapshot_dir), "points": points,
              "files": {"json": str(out / "curves.json"), "png": str(out / "curves.png")}}
    (out / "curves.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_curves(points, out / "curves.png")
    return result


def plot_curves(points: list[dict], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = points[0]["kind"] if points else "classification"
    fig, ax = plt.subplots(figsize=(6, 4))
    for metric in PRIMARY[kind] + ("format_compliance",):
        xs = [p["train_examples"] for p in points if metric in p["metrics"]]
        ys = [p["metrics"][metric] for p in points if metric in p["metrics"]]
        ax.plot(xs, ys, marker="o", label=metric)
    ax.set_xlabel("training examples")
    ax.set_ylabel("score on the eval split")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("learning curve (nested training subsets)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)
