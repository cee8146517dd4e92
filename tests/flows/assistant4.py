"""A small dataset config no other test uses: four CLINC150 intents, steeply imbalanced, with what dedupe removes
planted; and a training recipe of a few steps that learns it (tests/flows/test_ablate.py, test_iterate.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import write_config

# Four CLINC150 intents, steeply imbalanced, with what dedupe removes planted: copies of the largest
# intent's queries (exact and cased) and an eval query copied into train. Nothing for clean or balance
# to change: those variants are the ones before them, and cost no training.
PER_INTENT = {"timezone": 16, "cook_time": 10, "calculator": 6, "transfer": 4}
EVAL_PER_INTENT = 4
# Six steps of two packed rows (the whole train split each step): 18 s of training on one thread, and the
# tuned model answers ~0.8 of the eval rows right (chance: 0.25).
STEPS = ["train.max_steps=6", "train.batch_size=2", "train.cpu_threads=1", "train.val_size=4", "train.eval_steps=6",
         "train.logging_steps=1", "train.early_stopping_patience=0", "train.learning_rate=5e-3", "train.lora_r=16",
         "train.lora_alpha=32", "train.lora_dropout=0", "train.gradient_checkpointing=false", "train.eval_merged=true",
         "model.engine.gpu_memory_utilization=0.25"]


def write_dataset(tmp: Path, **sections) -> Path:
    """The dataset and its config under tmp; `sections` replace the config's (synthesis=..., iterate=...)."""
    rows = [json.loads(line) for line in Path("data/clinc150/raw/train_imbalanced.jsonl").read_text().splitlines()
            if line.strip()]
    evals = [json.loads(line) for line in Path("data/clinc150/eval.jsonl").read_text().splitlines() if line.strip()]
    train, eval_rows = [], []
    for intent, n in PER_INTENT.items():
        train += [r for r in rows if r.get("intent") == intent][:n]
        eval_rows += [r for r in evals if r["intent"] == intent][:EVAL_PER_INTENT]
    timezone = [r for r in train if r["intent"] == "timezone"]
    train += timezone[:3] + [{**r, "text": r["text"].upper()} for r in timezone[3:5]] + [eval_rows[0]]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in eval_rows))
    return write_config(tmp, {
        "name": "assistant4", "seed": 0,
        "task": {"kind": "classification", "input_field": "text", "output_field": "intent",
                 "instruction": "Classify the query into one of its intents. Answer with the intent name only.",
                 "labels": sorted(PER_INTENT)},
        "data": {"train": [{"path": str(tmp / "train.jsonl")}], "eval": [{"path": str(tmp / "eval.jsonl")}]},
        "clean": {"min_chars": 3, "min_words": 1},
        "balance": {"strategy": "none"},
        "train": {"format": {"template": "templates/formats/chatml.jinja", "include_instruction": False}},
        "output": {"snapshots": str(tmp / "snap"), "runs": str(tmp / "runs"), "cache": str(tmp / "cache")},
        "allow_outside_paths": True,
        **sections,
    })
