"""What each curation stage buys in model quality: one recipe trained on the data as it stands after each stage.

    curate ablate --config configs/clinc150.yaml --seeds 0,1,2
    report = ablation_report(runs, out_dir)     # runs: [{"variant", "seed", "snapshot", "adapter", "evaluation"}]

The flow (flows/curate_and_train.py, `ablate.enabled`) writes one snapshot per variant (the train rows
after that stage, raw = ingest only; every variant keeps the final snapshot's eval split), trains the
same recipe on each with each seed, and evaluates the tuned model; this module reads those
evaluations and says what each stage changed:

    per run      the tuned model's metrics on the eval split, plus the mean recall (classification) or
                 exact match (generation) of the smallest quarter of classes, ranked by their rows
                 before curation (the classes balancing and synthesis are for)
    per variant  train rows, format violations in them, each metric's mean, min, max and standard
                 deviation over the seeds
    per stage    the delta of each metric's mean against the variant before it, called beyond the
                 seeds' spread only when the two variants' ranges over the seeds do not overlap (one
                 seed: the spread is unknown and the report says so)

Writes ablation.json, ablation.md (a table per variant and per stage delta, for a pull request) and
ablation.png (each metric per variant, the seeds' range as error bars).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import polars as pl

from core.markdown import md_text
from core.snapshot import read_manifest
from trainers.model_card import META_FILE

METRICS = {
    "classification": ("accuracy", "macro_f1", "smallest_quarter_recall", "format_compliance"),
    "generation": ("exact_match", "slot_f1", "parse_rate", "smallest_quarter_exact_match", "format_compliance"),
}
SYSTEM = "tuned"  # the ablation scores the tuned model, free decoding: what it learned on its own
BEYOND, WITHIN, UNKNOWN = "beyond the seeds' spread", "within noise", "one seed: spread unknown"


def smallest_quarter(counts: dict[str, int]) -> list[str]:
    """The quarter of classes (rounded up) with the fewest rows, fewest first; ties by name."""
    ranked = sorted(counts, key=lambda c: (counts[c], c))
    return ranked[: math.ceil(len(ranked) / 4)]


def read_report(evaluation: str | Path) -> dict:
    """An evaluation folder's report.json (trainers/evaluate.py)."""
    return json.loads((Path(evaluation) / "report.json").read_text())


def read_predictions(evaluation: str | Path) -> list[dict]:
    with open(Path(evaluation) / "predictions.jsonl") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def group_score(predictions: Sequence[dict], classes: Sequence[str], system: str = SYSTEM) -> float | None:
    """Mean over `classes` of each class's share of eval rows answered right (its recall; exact match for
    generation, whose rows carry their class as `label`); None when no eval row is of those classes."""
    right, total = defaultdict(int), defaultdict(int)
    wanted = set(classes)
    for p in predictions:
        label = p.get("label", p["gold"])
        if label in wanted:
            total[label] += 1
            right[label] += p[system].strip() == p["gold"].strip()
    scores = [right[c] / total[c] for c in classes if total[c]]
    return sum(scores) / len(scores) if scores else None


def run_metrics(evaluation: str | Path, report: dict, small: Sequence[str]) -> dict:
    """The tuned model's headline metrics in one evaluation folder (`report`, its report.json), plus its smallest
    quarter's score."""
    kind = report["task_kind"]
    tuned = report["systems"][SYSTEM]
    group = group_score(read_predictions(evaluation), small)
    name = "smallest_quarter_recall" if kind == "classification" else "smallest_quarter_exact_match"
    return {m: (group if m == name else tuned[m]) for m in METRICS[kind]}


def spread(values: Sequence[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "min": None, "max": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def verdict(a: dict, b: dict) -> str:
    """Whether two variants differ beyond noise: their ranges over the seeds do not overlap (2+ seeds each)."""
    if a["n"] < 2 or b["n"] < 2:
        return UNKNOWN
    return BEYOND if a["max"] < b["min"] or b["max"] < a["min"] else WITHIN


def synthetic_rows(snapshot: str | Path) -> int:
    train = pl.read_parquet(Path(snapshot) / "train.parquet", columns=["synthetic"], glob=False)
    return int(train["synthetic"].fill_null(False).sum())


def format_violations(adapter: str | Path) -> int | None:
    """Rows the trainer's token-level check flagged in the run's data (trained truncated), None if unchecked."""
    path = Path(adapter).parent / "format_report.json"
    return len(json.loads(path.read_text())["violations"]) if path.is_file() else None


def ablation_report(runs: Sequence[dict], out_dir: str | Path) -> dict:
    """Read every run's evaluation; per variant and per stage, the metrics and their deltas. Writes the report files.

    Each run: variant, seed, snapshot (the variant's folder), adapter and evaluation (folders). Variants
    are compared in the order of their first run.
    """
    if not runs:
        raise ValueError("no ablation runs to report")
    manifests = {r["snapshot"]: read_manifest(r["snapshot"]) for r in runs}
    reports = {r["evaluation"]: read_report(r["evaluation"]) for r in runs}
    first = manifests[runs[0]["snapshot"]]
    counts = first["class_distribution"]["ingested"] or first["class_distribution"]["train"]
    small = smallest_quarter(counts)
    kind = reports[runs[0]["evaluation"]]["task_kind"]
    metrics = METRICS[kind]

    by_variant: dict[str, list[dict]] = {}
    for r in runs:
        meta = json.loads((Path(r["adapter"]) / META_FILE).read_text())
        by_variant.setdefault(r["variant"], []).append({
            "seed": r["seed"], "adapter": str(r["adapter"]), "evaluation": str(r["evaluation"]),
            "steps": meta["global_step"], "fit_seconds": meta.get("fit_seconds"),
            "metrics": run_metrics(r["evaluation"], reports[r["evaluation"]], small),
            "format_violations": format_violations(r["adapter"]),
        })
    variants, seen = [], {}
    for name, seeds in by_variant.items():
        snapshot = next(r["snapshot"] for r in runs if r["variant"] == name)
        manifest = manifests[snapshot]
        sid = manifest["snapshot_id"]
        variants.append({
            "variant": name, "snapshot": snapshot, "snapshot_id": sid,
            "same_rows_as": seen.get(sid),  # a stage that changed no row: the same snapshot, the same runs
            "train_rows": manifest["rows"]["train"],
            "synthetic_rows": synthetic_rows(snapshot),
            "format_violations": seeds[0]["format_violations"],
            "runs": sorted(seeds, key=lambda s: s["seed"]),
            "summary": {m: spread([s["metrics"][m] for s in seeds]) for m in metrics},
        })
        seen.setdefault(sid, name)
    deltas = []
    for before, after in zip(variants, variants[1:]):
        row = {"stage": after["variant"], "against": before["variant"], "metrics": {}}
        for m in metrics:
            a, b = before["summary"][m], after["summary"][m]
            delta = None if a["mean"] is None or b["mean"] is None else b["mean"] - a["mean"]
            row["metrics"][m] = {"delta": delta, "verdict": verdict(a, b) if delta is not None else UNKNOWN}
        deltas.append(row)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "dataset": first.get("name"), "task_kind": kind, "system": SYSTEM, "metrics": list(metrics),
        "eval_rows": reports[runs[0]["evaluation"]]["eval_rows"],
        "seeds": sorted({r["seed"] for r in runs}), "smallest_quarter": small,
        "variants": variants, "deltas": deltas,
        "files": {"json": str(out / "ablation.json"), "markdown": str(out / "ablation.md"), "png": str(out / "ablation.png")},
    }
    (out / "ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "ablation.md").write_text(render_markdown(report))
    plot_ablation(report, out / "ablation.png")
    return report


def _cell(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    if s["n"] < 2:
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} ({s['min']:.3f}-{s['max']:.3f})"


def render_markdown(report: dict) -> str:
    """The ablation as a pull-request comment: a row per variant, a row per stage's delta, the verdict on noise."""
    metrics = report["metrics"]
    names = [m.replace("_", " ") for m in metrics]
    seeds = report["seeds"]
    lines = [
        f"# What each curation stage buys: {md_text(report['dataset'])}",
        "",
        f"The same recipe trained on the rows after each stage, seeds {', '.join(map(str, seeds))}, scored on the "
        f"final snapshot's {report['eval_rows']} eval rows (tuned model, free decoding). Cells: mean over the seeds "
        "(min-max). Smallest quarter: the "
        f"{len(report['smallest_quarter'])} classes with the fewest rows before curation.",
        "",
        "| variant | train rows | format violations | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(metrics),
    ]
    for v in report["variants"]:
        note = f" (same rows as {v['same_rows_as']})" if v["same_rows_as"] else ""
        violations = "-" if v["format_violations"] is None else str(v["format_violations"])
        synthetic = f" ({v['synthetic_rows']} synthetic)" if v["synthetic_rows"] else ""
        lines.append(f"| {v['variant']}{note} | {v['train_rows']}{synthetic} | {violations} | "
                     + " | ".join(_cell(v["summary"][m]) for m in metrics) + " |")
    if report["deltas"]:
        lines += ["", "| stage | against | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(metrics)]
        for d in report["deltas"]:
            cells = []
            for m in metrics:
                x = d["metrics"][m]
                cells.append("-" if x["delta"] is None else f"{x['delta']:+.3f} ({x['verdict']})")
            lines.append(f"| {d['stage']} | {d['against']} | " + " | ".join(cells) + " |")
    lines += ["", "Smallest quarter: " + ", ".join(md_text(c) for c in report["smallest_quarter"]), "",
              f"![ablation]({Path(report['files']['png']).name})", ""]
    return "\n".join(lines)


def plot_ablation(report: dict, path: str | Path) -> Path:
    """Each metric per variant, grouped bars, the seeds' min-max as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants, metrics = report["variants"], report["metrics"]
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(variants) + 2), 4))
    for i, m in enumerate(metrics):
        xs, ys, lo, hi = [], [], [], []
        for j, v in enumerate(variants):
            s = v["summary"][m]
            if s["mean"] is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(s["mean"])
            lo.append(s["mean"] - s["min"])
            hi.append(s["max"] - s["mean"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=m.replace("_", " "))
    ax.set_xticks(range(len(variants)), [f"{v['variant']}\n{v['train_rows']} rows" for v in variants])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score on the eval split")
    ax.set_title(f"{report['dataset']}: the recipe on the rows after each stage (seeds {', '.join(map(str, report['seeds']))})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)
