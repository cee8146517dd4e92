"""Helpers for the trainer tests: a tiny snapshot folder built from the committed banking77 sample."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

LABELS = ["pin_blocked", "card_arrival", "visa_or_mastercard", "lost_or_stolen_phone"]
INSTRUCTION = "Classify the customer's message to an online bank into one of its intents. Answer with the intent name only."


def make_snapshot(folder: Path, per_label: int = 8, eval_per_label: int = 2, max_chars: int = 80) -> Path:
    """A snapshot-shaped folder (train/eval parquet + manifest) with short real messages of 4 intents."""
    import polars as pl

    by_label: dict[str, list[str]] = defaultdict(list)
    for line in Path("data/banking77/raw/messages.jsonl").read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        text, label = rec.get("text"), rec.get("category")
        if label in LABELS and isinstance(text, str) and 10 < len(text) <= max_chars and text not in by_label[label]:
            by_label[label].append(text)
    rows = {"train": [], "eval": []}
    for label in LABELS:
        texts = by_label[label]
        assert len(texts) >= per_label + eval_per_label, label
        for split, chunk in (("train", texts[:per_label]), ("eval", texts[per_label:per_label + eval_per_label])):
            for i, text in enumerate(chunk):
                rows[split].append({
                    "row_id": f"{split}-{label}-{i}", "split": split, "source": "test", "line": i,
                    "input": text, "output": label, "label": label, "pii": [], "synthetic": False,
                })
    folder.mkdir(parents=True, exist_ok=True)
    for split, data in rows.items():
        pl.DataFrame(data).write_parquet(folder / f"{split}.parquet")
    manifest = {
        "snapshot_id": folder.name, "name": "tiny",
        "config": {"task": {"kind": "classification", "instruction": INSTRUCTION, "labels": LABELS,
                            "labels_file": None, "input_field": "text", "output_field": "category"}},
        "class_distribution": {"train": {l: per_label for l in LABELS}, "eval": {l: eval_per_label for l in LABELS}},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder
