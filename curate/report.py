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
