"""Evaluation directs synthesis: which classes a round's budget goes to, and what each round bought.

    plan = plan_round(evaluation_dir, labels, budget=120, classes=8)      # label, synth, recall, confidence, focus
    stop = stop_reason(scores, min_gain=0.0)                              # None: go on
    report = iteration_report(rounds, out_dir)                            # iteration.{json,md,png}

A round's weakest classes are those the last evaluation scored lowest: per-class recall first, then
the tuned model's mean probability of the right label (evaluate's `per_class_confidence`; a class
answered right but unsurely comes before one answered right and surely). Classes the model already
gets all right with confidence >= SURE take nothing. The budget is shared equally, the weakest first
for the remainder.

Within a class the rows come next: a budgeted class's `focus` lists its eval rows the tuned model was least
sure of (lowest probability of the right answer, evaluate's `p_right`). Synthesis shows
the generator the real training rows of the class nearest to those (synthesis.requests.steer_shots), so the
new rows are written around where the model is weakest, not around a random draw of the class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import polars as pl

from core.io import write_json
from core.markdown import md_text
from core.snapshot import read_manifest
from trainers.ablate import SYSTEM, read_predictions, read_report, synthetic_rows

SURE = 0.9  # a class with recall 1.0 and this mean confidence in its right label gets no budget


def class_scores(report: dict, labels: Sequence[str]) -> dict[str, dict]:
    """Per label: the tuned model's recall on its eval rows and its mean confidence in the right label (None where
    the evaluation has no row of the class or recorded no confidence)."""
    recall = report["systems"][SYSTEM].get("per_class_recall", {})
    conf = report.get("per_class_confidence") or {}
    return {label: {"recall": recall.get(label), "confidence": conf.get(label)} for label in labels}


def least_sure_rows(predictions: Sequence[dict], k: int) -> dict[str, list[str]]:
    """Per class, the row ids of its k eval rows with the lowest probability of the right answer (`p_right`; ties
    by row id). Empty where the evaluation recorded no such probability."""
    by_class: dict[str, list[tuple[float, str]]] = {}
    for p in predictions:
        if p.get("p_right") is not None:
            by_class.setdefault(p["label"], []).append((p["p_right"], p["row_id"]))
    return {label: [row_id for _, row_id in sorted(rows)[:k]] for label, rows in by_class.items()}


def plan_round(evaluation: str | Path, labels: Sequence[str], *, budget: int, classes: int, focus: int = 3) -> pl.DataFrame:
    """The next round's synthesis plan (label, synth, recall, confidence, focus; every label, 0 for the others):
    `focus` lists up to that many of a budgeted class's least-sure eval rows (least_sure_rows)."""
    scores = class_scores(read_report(evaluation), labels)
    candidates = [c for c, s in scores.items() if s["recall"] is not None
                  and not (s["recall"] >= 1.0 and (s["confidence"] is None or s["confidence"] >= SURE))]
    ranked = sorted(candidates, key=lambda c: (scores[c]["recall"], scores[c]["confidence"] or 0.0, c))[:classes]
    share, extra = divmod(budget, max(len(ranked), 1))
    synth = {c: share + (i < extra) for i, c in enumerate(ranked)}
    unsure = least_sure_rows(read_predictions(evaluation), focus) if focus > 0 else {}
    return pl.DataFrame(
        [{"label": c, "synth": synth.get(c, 0), "recall": scores[c]["recall"], "confidence": scores[c]["confidence"],
          "focus": unsure.get(c, []) if synth.get(c) else []}
         for c in labels],
        schema={"label": pl.String, "synth": pl.Int64, "recall": pl.Float64, "confidence": pl.Float64,
                "focus": pl.List(pl.String)},
    )


def headline(report: dict) -> dict:
    tuned = report["systems"][SYSTEM]
    cal = (report.get("calibration") or {}).get("tuned, label distribution") or (report.get("calibration") or {}).get(SYSTEM)
    return {"accuracy": tuned["accuracy"], "macro_f1": tuned["macro_f1"], "ece": cal["ece"] if cal else None,
            "eval_rows": report["eval_rows"]}


def stop_reason(scores: Sequence[float], *, min_gain: float) -> str | None:
    """Why the loop stops after the last of `scores` (macro-F1 per round so far), or None."""
    if len(scores) < 2:
        return None
    gain = scores[-1] - max(scores[:-1])
    if gain < min_gain or (min_gain == 0 and gain <= 0):
        return f"round {len(scores)} gained {gain:+.4f} macro-F1 over the best round before it (needed > {min_gain:g})"
    return None


def iteration_report(rounds: Sequence[dict], out_dir: str | Path, *, stopped: str | None = None) -> dict:
    """Each round's data and scores, and per targeted class its recall round by round. Writes the report files.

    Each round: iteration (1-based), snapshot, adapter, evaluation (folders), and from round 2 `plan` (the
    plan.parquet its synthesis filled) and `synthesis` (its synthesis.json totals)."""
    if not rounds:
        raise ValueError("no rounds to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = read_report(rounds[0]["evaluation"])["confusion"]["labels"]
    table, targeted = [], {}
    for r in rounds:
        manifest, report = read_manifest(r["snapshot"]), read_report(r["evaluation"])
        row = {"iteration": r["iteration"], "snapshot": str(r["snapshot"]), "snapshot_id": manifest["snapshot_id"],
               "train_rows": manifest["rows"]["train"],
               "synthetic_rows": synthetic_rows(r["snapshot"]), **headline(report), "asked": {}, "kept": {},
               "adapter": r["adapter"], "evaluation": r["evaluation"]}
        if r.get("plan"):
            plan = pl.read_parquet(r["plan"], glob=False).filter(pl.col("synth") > 0)
            row["asked"] = dict(zip(plan["label"].to_list(), plan["synth"].to_list()))
            if "focus" in plan.columns:  # the least-sure eval rows that steered each class's synthesis
                row["focus"] = {c: ids for c, ids in zip(plan["label"].to_list(), plan["focus"].to_list()) if ids}
            per_class = (r.get("synthesis") or {}).get("by_class", {})
            row["kept"] = {c: per_class.get(c, {}).get("kept", 0) for c in row["asked"]}
            for c in row["asked"]:
                targeted.setdefault(c, r["iteration"])
        row["per_class"] = class_scores(report, labels)
        table.append(row)
    best = max(table, key=lambda t: t["macro_f1"])
    report = {
        "rounds": table,
        "best": best["iteration"],
        "stopped": stopped,
        "gain": round(best["macro_f1"] - table[0]["macro_f1"], 4),
        "targeted": targeted,
        "files": {"markdown": str(out / "iteration.md"), "json": str(out / "iteration.json"),
                  "png": str(out / "iteration.png")},
    }
    write_json(report, out / "iteration.json")
    (out / "iteration.md").write_text(render_markdown(report))
    plot_iteration(report, out / "iteration.png")
    return report


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def render_markdown(report: dict) -> str:
    rounds = report["rounds"]
    lines = [
        "# Evaluation-directed synthesis, round by round",
        "",
        "Round 1 is the run's own training; each later round synthesized rows for the classes the round before "
        "scored worst, kept those the round before's tuned adapter labelled as intended, and trained again. "
        "All rounds are scored on the same eval rows; the classes were chosen on them too, so read the gains "
        "as an upper bound and confirm them on a held-out split.",
        "",
        "| round | train rows | synthetic rows | accuracy | macro F1 | ECE | classes given budget (kept / asked) |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rounds:
        asked = ", ".join(f"{md_text(c)} {r['kept'].get(c, 0)}/{n}" for c, n in r["asked"].items()) or "-"
        lines.append(f"| {r['iteration']} | {r['train_rows']} | {r['synthetic_rows']} | {_pct(r['accuracy'])} | "
                     f"{_pct(r['macro_f1'])} | {_pct(r['ece'])} | {asked} |")
    lines += ["", f"Best round: {report['best']} ({report['gain']:+.4f} macro-F1 over round 1)."]
    steered = [(r["iteration"], c, ids) for r in rounds for c, ids in (r.get("focus") or {}).items()]
    if steered:
        lines += ["", "Within each class, the eval rows the round before was least sure of steered the generator, "
                  "which was shown the class's real training rows nearest to them:", ""]
        lines += [f"- round {it}, {md_text(c)}: " + ", ".join(md_text(i) for i in ids) for it, c, ids in steered]
    if report["stopped"]:
        lines.append(f"Stopped: {md_text(report['stopped'])}.")
    if report["targeted"]:
        lines += ["", "## The classes given budget: recall (mean confidence in the right label) per round", "",
                  "| class | first given budget | " + " | ".join(f"round {r['iteration']}" for r in rounds) + " |",
                  "|---|---:|" + "---:|" * len(rounds)]
        for c, first in sorted(report["targeted"].items(), key=lambda kv: (kv[1], kv[0])):
            cells = [f"{_pct(r['per_class'][c]['recall'])} ({_pct(r['per_class'][c]['confidence'])})" for r in rounds]
            lines.append(f"| {md_text(c)} | {first} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_iteration(report: dict, path: str | Path) -> Path:
    """Left: accuracy and macro-F1 per round. Right: each targeted class's recall per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report["rounds"]
    xs = [r["iteration"] for r in rounds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for metric in ("accuracy", "macro_f1"):
        left.plot(xs, [r[metric] for r in rounds], marker="o", label=metric.replace("_", " "))
    left.set_xlabel("round")
    left.set_xticks(xs)
    left.set_title("eval score per round")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    for c in sorted(report["targeted"]):
        right.plot(xs, [r["per_class"][c]["recall"] for r in rounds], marker=".", linewidth=1, label=c)
    right.set_xlabel("round")
    right.set_xticks(xs)
    right.set_ylim(-0.05, 1.05)
    right.set_title("recall of the classes given budget")
    right.grid(alpha=0.3)
    if 0 < len(report["targeted"]) <= 12:
        right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)
