"""The training and evaluation results as table rows: the CLI's summary tables and the flow's Prefect artifacts.

    rows = training_rows(adapter_dir)       # method, rows, steps, losses, resume, time, memory, device
    rows = evaluation_rows(eval_dir)        # one row per evaluated system with its headline metrics
    rows = system_rows(report)              # the same for a report already read
"""

from __future__ import annotations

import json
from pathlib import Path


def training_rows(adapter_dir: str | Path) -> list[dict]:
    """The training summary as table rows (a Prefect artifact, the CLI summary)."""
    meta = json.loads((Path(adapter_dir) / "train_meta.json").read_text())
    losses, evals = meta.get("train_loss") or [], meta.get("eval_loss") or []
    return [
        {"metric": "method", "value": meta["method"]},
        {"metric": "train rows / validation rows", "value": f"{meta['train_rows']} / {meta['val_rows']}"},
        {"metric": "steps", "value": meta["global_step"]},
        {"metric": "train loss first -> last", "value": f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "-"},
        {"metric": "validation loss (best)", "value": f"{min(evals):.3f}" if evals else "-"},
        {"metric": "resumed from", "value": Path(meta["resumed_from"]).name if meta.get("resumed_from") else "-"},
        {"metric": "fit seconds", "value": meta["fit_seconds"]},
        {"metric": "peak memory MB", "value": meta["peak_memory_mb"]},
        {"metric": "device", "value": meta["device"]},
    ]


def evaluation_rows(eval_dir: str | Path) -> list[dict]:
    """One row per evaluated system with its headline metrics."""
    return system_rows(json.loads((Path(eval_dir) / "report.json").read_text()))


def system_rows(report: dict) -> list[dict]:
    """One row per system of an evaluation report (trainers.evaluate) with its headline metrics."""
    keys = ("accuracy", "macro_f1", "format_compliance") if report["task_kind"] == "classification" else (
        "exact_match", "slot_f1", "parse_rate", "format_compliance")
    return [{"system": name, **{k: round(m[k], 4) for k in keys}, "n": m["n"]} for name, m in report["systems"].items()]
