"""Human-readable views of a snapshot manifest: the funnel and the class mix, as tables and charts.

Used by the CLI's summary table, the Prefect artifacts and the snapshot's class_mix.png,
so all say the same.
"""

from __future__ import annotations

from pathlib import Path

from core.io import atomic_path
from core.markdown import md_code, md_text


def funnel_rows(manifest: dict) -> list[dict]:
    """One row per stage: rows in, kept, filtered and quarantined, with the reasons."""
    rows = []
    for s in manifest["stages"]:
        reasons = {**s["filtered"], **s["quarantined"]}
        rows.append(
            {
                "stage": s["stage"],
                "rows_in": s["rows_in"],
                "kept": s["kept"],
                "filtered": sum(s["filtered"].values()),
                "quarantined": sum(s["quarantined"].values()),
                "reasons": ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            }
        )
    return rows


def class_rows(manifest: dict) -> list[dict]:
    """Per class: train rows as ingested, after curation, their share, and eval rows."""
    dist = manifest["class_distribution"]
    before = dist.get("ingested", {})
    total = sum(dist["train"].values()) or 1
    plan = {r["label"]: r for r in manifest.get("balance_plan") or []}
    labels = sorted(set(dist["train"]) | set(dist["eval"]) | set(before) | set(plan))
    return [
        {
            "class": label,
            "ingested": before.get(label, 0),
            "planned": plan.get(label, {}).get("planned"),
            "synth_budget": plan.get(label, {}).get("synth"),
            "train": dist["train"].get(label, 0),
            "share": round(100 * dist["train"].get(label, 0) / total, 2),
            "eval": dist["eval"].get(label, 0),
        }
        for label in labels
    ]


def manifest_markdown(manifest: dict, folder: str | Path) -> str:
    lines = [
        f"# Snapshot `{manifest['snapshot_id']}` of {md_code(manifest['name'])}",
        "",
        f"- folder: {md_code(folder)}",
        f"- rows: train {manifest['rows']['train']}, eval {manifest['rows']['eval']}, "
        f"rejected {manifest['rows']['rejected']}, quarantined {manifest['rows']['quarantine']}",
        f"- config hash: `{manifest['config_hash']}`, code: `{manifest['code']['source_sha256']}`",
        "",
        "| stage | rows in | kept | filtered | quarantined | reasons |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in funnel_rows(manifest):
        lines.append(f"| {md_text(r['stage'])} | {r['rows_in']} | {r['kept']} | {r['filtered']} | {r['quarantined']} "
                     f"| {md_text(r['reasons'])} |")
    return "\n".join(lines) + "\n"


def class_mix_chart(manifest: dict, width: int = 30) -> str:
    """The class mix before and after curation as a markdown bar chart (renders in any markdown view,
    the Prefect UI included, where the snapshot's class_mix.png cannot be shown)."""
    rows = class_rows(manifest)
    top = max([max(r["ingested"], r["train"], r["planned"] or 0) for r in rows] or [1]) or 1

    def bar(n: int) -> str:
        return "█" * round(width * n / top) or ("▏" if n else "")

    lines = [f"Train rows per class, before curation (░) and in snapshot `{manifest['snapshot_id']}` (█); "
             f"one block = {top / width:.1f} rows.", "", "| class | before | after | planned | |", "|---|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: (-r["train"], r["class"])):
        before = "░" * round(width * r["ingested"] / top)
        planned = "" if r["planned"] is None else str(r["planned"])
        lines.append(f"| {md_text(r['class'])} | {r['ingested']} | {r['train']} | {planned} | `{bar(r['train'])}`<br>`{before}` |")
    return "\n".join(lines) + "\n"


def plot_class_mix(before: dict[str, int], planned: dict[str, int], after: dict[str, int] | None, path, *, title: str = "class mix") -> None:
    """Grouped bar chart (PNG) of rows per class: before, planned and (if known) after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = sorted(set(before) | set(planned) | set(after or {}), key=lambda c: (-before.get(c, 0), c))
    series = [("before", before, "#9aa5b1"), ("planned", planned, "#2f6fdf")]
    if after is not None:
        series.append(("after", after, "#1f9d55"))
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(min(18, max(8, 0.2 * len(labels) * len(series))), 5), dpi=110)
    for i, (name, values, colour) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [values.get(c, 0) for c in labels], width, label=name, color=colour)
    ax.set_xticks(x, labels, rotation=90, fontsize=6 if len(labels) > 30 else 8)
    ax.set_ylabel("train rows")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
