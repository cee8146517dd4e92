"""Human-readable views of a snapshot manifest: the funnel and the class mix.

Used by the CLI's summary table and by the Prefect artifacts, so both say the same.
"""

from __future__ import annotations

from pathlib import Path


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
        f"# Snapshot `{manifest['snapshot_id']}` of `{manifest['name']}`",
        "",
        f"- folder: `{folder}`",
        f"- rows: train {manifest['rows']['train']}, eval {manifest['rows']['eval']}, "
        f"rejected {manifest['rows']['rejected']}, quarantined {manifest['rows']['quarantine']}",
        f"- config hash: `{manifest['config_hash']}`, code: `{manifest['code']['source_sha256']}`",
        "",
        "| stage | rows in | kept | filtered | quarantined | reasons |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in funnel_rows(manifest):
        lines.append(f"| {r['stage']} | {r['rows_in']} | {r['kept']} | {r['filtered']} | {r['quarantined']} | {r['reasons']} |")
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
        lines.append(f"| {r['class']} | {r['ingested']} | {r['train']} | {planned} | `{bar(r['train'])}`<br>`{before}` |")
    return "\n".join(lines) + "\n"
