"""Learning curves and parameter sweeps: train the recipe with one thing varied, evaluate each, compare.

    curate sweep banking77 --fractions 0.25,0.5,1.0 --set max_steps=100        # a learning curve
    curate sweep banking77 --param learning_rate=1e-3,2e-3,4e-3                   # any training parameter
    curate sweep banking77 --param method=qlora,lora8 --param lora_r=8,16         # a grid: every combination

A sweep point is the recipe with the point's values, validated as a config file's would be; per point
the tuned model's metrics, and from the training record the peak memory and the tokens trained per
second. Writes sweep.json, sweep.md and sweep.png (metric, peak memory, tokens/s per point).

Fractions are nested (trainers.qlora.split_rows: the first share of one seeded permutation,
the validation hold-out fixed), so each point adds examples to the previous one. Every
point is a full `train` + `evaluate` (tuned only; the base model is the 0-example point
when `--baseline`). Writes curves.json and curves.png into the output folder.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from core.markdown import md_text
from core.train_config import TrainConfig
from trainers.evaluate import evaluate
from trainers.qlora import read_meta, train

PRIMARY = {"classification": ("accuracy", "macro_f1"), "generation": ("exact_match", "slot_f1")}


def learning_curve(snapshot_dir: str | Path, model_dir: str | Path, train_cfg: TrainConfig, out_dir: str | Path, *,
                   fractions: Sequence[float] = (0.25, 0.5, 1.0), task_cfg: Any = None, engine: str = "vllm",
                   baseline: bool = False, max_examples: int | None = None, merged: bool = False,
                   train_fn: Callable | None = None, evaluate_fn: Callable | None = None) -> dict:
    """Train + evaluate per fraction; returns {points: [...], files: {...}} and writes curves.json/png.

    `merged`: vLLM serves each adapter merged into its base (trainers.evaluate), not as a LoRA request."""
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
        rep = evaluate_fn(adapter, snapshot_dir, engine=engine, baseline=False, max_examples=max_examples, merged=merged)
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


def grid_points(grid: dict[str, Sequence]) -> list[dict]:
    """Every combination of the grid's values, in the order given (the last parameter varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_config(train_cfg: TrainConfig, values: dict) -> TrainConfig:
    """The recipe with a point's values, validated as a config file's (an unknown key or a bad value raises)."""
    unknown = set(values) - set(TrainConfig.model_fields)
    if unknown:
        raise ValueError(f"not a training parameter: {', '.join(sorted(unknown))} (see core/train_config.py TrainConfig)")
    return TrainConfig.model_validate({**train_cfg.model_dump(), **values})


def point_name(values: dict) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.+-]", "-", f"{k}-{v}") for k, v in values.items())


def sweep(snapshot_dir: str | Path, model_dir: str | Path, train_cfg: TrainConfig, out_dir: str | Path, *,
          grid: dict[str, Sequence], task_cfg: Any = None, engine: str = "vllm", max_examples: int | None = None,
          merged: bool = False, train_fn: Callable | None = None, evaluate_fn: Callable | None = None) -> dict:
    """Train + evaluate the recipe at every point of the grid; writes and returns the sweep report.

    `merged`: vLLM serves each adapter merged into its base (trainers.evaluate), not as a LoRA request."""
    train_fn = train_fn or train
    evaluate_fn = evaluate_fn or evaluate
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    configs = [(values, point_config(train_cfg, values)) for values in grid_points(grid)]  # every point checked first
    points = []
    for values, cfg in configs:
        adapter = train_fn(snapshot_dir, model_dir, cfg, task_cfg, out / point_name(values))
        rep = evaluate_fn(adapter, snapshot_dir, engine=engine, baseline=False, max_examples=max_examples, merged=merged)
        meta = read_meta(adapter)
        fit, tokens = meta.get("fit_seconds") or 0.0, meta.get("train_tokens")
        points.append({"values": values, "kind": rep["task_kind"], "adapter": str(adapter), "metrics": rep["systems"]["tuned"],
                       "train_rows": meta.get("train_rows"), "steps": meta.get("global_step"),
                       "peak_memory_mb": meta.get("peak_memory_mb"), "fit_seconds": fit,
                       "tokens_per_s": round(tokens / fit, 1) if tokens and fit else None,
                       "final_train_loss": (meta.get("train_loss") or [None])[-1]})
    kind = points[0]["kind"]
    best = max(points, key=lambda p: p["metrics"][PRIMARY[kind][1]])
    result = {"snapshot": str(snapshot_dir), "grid": {k: list(v) for k, v in grid.items()},
              "recipe": train_cfg.model_dump(mode="json"), "points": points, "best": best["values"],
              "files": {"json": str(out / "sweep.json"), "markdown": str(out / "sweep.md"), "png": str(out / "sweep.png")}}
    (out / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "sweep.md").write_text(sweep_markdown(result))
    plot_sweep(points, out / "sweep.png")
    return result


def _label(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def sweep_markdown(result: dict) -> str:
    kind = result["points"][0]["kind"]
    metrics = PRIMARY[kind] + ("format_compliance",)
    lines = [f"# Sweep over {md_text(', '.join(result['grid']))} on {md_text(result['snapshot'])}", "",
             "| point | " + " | ".join(m.replace("_", " ") for m in metrics)
             + " | peak memory (MB) | tokens/s | train seconds | final train loss |",
             "|---|" + "---:|" * (len(metrics) + 4)]
    for p in result["points"]:
        cells = [f"{p['metrics'][m]:.3f}" for m in metrics]
        extra = [f"{p['peak_memory_mb']:.0f}" if p["peak_memory_mb"] else "-", f"{p['tokens_per_s']:.0f}" if p["tokens_per_s"] else "-",
                 f"{p['fit_seconds']:.0f}", f"{p['final_train_loss']:.4f}" if p["final_train_loss"] is not None else "-"]
        lines.append(f"| {md_text(_label(p['values']))} | " + " | ".join(cells + extra) + " |")
    lines += ["", f"Best {PRIMARY[kind][1].replace('_', ' ')}: {md_text(_label(result['best']))}."]
    return "\n".join(lines) + "\n"


def plot_sweep(points: list[dict], path: str | Path) -> Path:
    """Three panels per point: the metrics, peak memory, tokens trained per second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = points[0]["kind"]
    labels = [_label(p["values"]) for p in points]
    xs = list(range(len(points)))
    fig, axes = plt.subplots(1, 3, figsize=(max(10, 1.2 * len(points) * 3), 4))
    for metric in PRIMARY[kind]:
        axes[0].plot(xs, [p["metrics"][metric] for p in points], marker="o", label=metric.replace("_", " "))
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    axes[0].set_title("score on the eval split")
    axes[1].bar(xs, [p["peak_memory_mb"] or 0 for p in points], color="tab:gray")
    axes[1].set_title("peak memory (MB)")
    axes[2].bar(xs, [p["tokens_per_s"] or 0 for p in points], color="tab:green")
    axes[2].set_title("tokens trained per second")
    for ax in axes:
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)
