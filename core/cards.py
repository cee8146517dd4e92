"""A snapshot's dataset card: README.md with the YAML front matter `datasets` reads.

    write_dataset_card(folder, manifest, train, eval)     # in core.snapshot, before the folder is published
    datasets.load_dataset("data/snapshots/banking77/<id>")  # train and eval, label a ClassLabel

The front matter (huggingface_hub's DatasetCardData) names the data files of each split
(`configs:`: default = train + eval; `rejected` and `quarantine` as configs of their own)
and their features, taken from the Parquet schema, with the label of a classification task
as a `ClassLabel` over the classes the snapshot holds, sorted. The body says what the
snapshot is: its id, rows per split and class, each curation stage's accounting, the
sources with their hashes, and how to load it. User text (labels, paths) is escaped
(core/markdown.py): the card is rendered on a hub or in a pull request.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from huggingface_hub import DatasetCard, DatasetCardData

from core.markdown import md_code, md_text


def _features(frame: pl.DataFrame, labels: list[str] | None) -> list[dict]:
    """The frame's columns as `datasets` features (YAML list), the label a ClassLabel when `labels`."""
    import datasets  # 0.7 s to import: only where a snapshot is written, as core.snapshot.load_dataset does

    features = datasets.Features.from_arrow_schema(frame.to_arrow().schema)
    if labels is not None:
        features["label"] = datasets.ClassLabel(names=labels)
    return features._to_yaml_list()


def dataset_card(manifest: dict, train: pl.DataFrame, eval: pl.DataFrame) -> str:
    """The README.md text of a snapshot (front matter and body)."""
    task = manifest["config"].get("task", {})
    classification = task.get("kind") == "classification"
    classification = classification and "label" in train.columns and "label" in eval.columns
    labels = sorted(set(train["label"].drop_nulls()) | set(eval["label"].drop_nulls())) if classification else None
    synthetic = int(train["synthetic"].sum()) if "synthetic" in train.columns else 0
    data = DatasetCardData(
        pretty_name=f"{manifest['name']} {manifest['snapshot_id']}",
        task_categories=["text-classification"] if classification else ["text-generation"],
        size_categories=[_size_category(train.height + eval.height)],
        configs=[
            {"config_name": "default", "default": True,
             "data_files": [{"split": "train", "path": "train.parquet"}, {"split": "eval", "path": "eval.parquet"}]},
            {"config_name": "rejected", "data_files": [{"split": "rejected", "path": "rejected.parquet"}]},
            {"config_name": "quarantine", "data_files": [{"split": "quarantine", "path": "quarantine.parquet"}]},
        ],
        dataset_info={"config_name": "default", "features": _features(train, labels),
                      "splits": [{"name": "train", "num_examples": train.height},
                                 {"name": "eval", "num_examples": eval.height}]},
    )
    rows = manifest["rows"]
    lines = [
        f"# {md_text(manifest['name'])}, snapshot {manifest['snapshot_id']}",
        "",
        f"A curated {'classification' if classification else 'generation'} dataset written by curate-and-train: "
        f"{rows['train']} train rows ({synthetic} synthetic), {rows['eval']} eval rows; "
        f"{rows['rejected']} rows filtered and {rows['quarantine']} source records quarantined, each with its reason "
        "(configs `rejected` and `quarantine`).",
        "",
        "```python",
        "import datasets",
        f"ds = datasets.load_dataset(\"path/to/{manifest['snapshot_id']}\")   # train and eval",
        "```",
        "",
        "Fields: `input` (the model's input), `output` (its answer), `label` (the class), `source` and `line` "
        "(where the record came from; `synthetic` rows name their template), `pii` (what was redacted).",
        "",
        "## Curation",
        "",
        "| stage | rows in | kept | filtered | quarantined |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in manifest["stages"]:
        lines.append(f"| {md_text(s['stage'])} | {s['rows_in']} | {s['kept']} | {sum(s['filtered'].values())} "
                     f"| {sum(s['quarantined'].values())} |")
    if classification:
        dist = manifest["class_distribution"]
        lines += ["", "## Classes", "", "| class | train | eval |", "|---|---:|---:|"]
        lines += [f"| {md_text(c)} | {dist['train'].get(c, 0)} | {dist['eval'].get(c, 0)} |" for c in labels]
    lines += ["", "## Sources", ""]
    lines += [f"- {md_text(i['split'])}: {md_code(i['path'])}, {i['bytes']} bytes, sha256 `{i['sha256'][:16]}`"
              for i in manifest["inputs"]]
    code = manifest.get("code") or {}
    lines += ["", f"Config hash `{manifest['config_hash']}`; curate-and-train {md_text(code.get('package'))}"
              + (f", commit `{code['git_commit'][:12]}`" if code.get("git_commit") else "") + ".", ""]
    # not DatasetCard.from_template: it renders its text as a Jinja template, and labels are user text
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines)).content


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M"


def write_dataset_card(folder: Path, manifest: dict, train: pl.DataFrame, eval: pl.DataFrame) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(dataset_card(manifest, train, eval), encoding="utf-8")
    return path
