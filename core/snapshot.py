"""Versioned dataset snapshots: immutable folders that every later stage reads.

    data/snapshots/<name>/<snapshot_id>/
        train.parquet       curated training rows (row schema, core/schema.py)
        eval.parquet        curated held-out rows
        rejected.parquet    every filtered row with its stage, reason and lineage
        quarantine.parquet  every unusable source record with its reason and location
        manifest.json       config and its hash, input hashes, per-stage counts,
                            class distribution, code version, file hashes
        README.md           dataset card: its splits and features for datasets.load_dataset(folder)

The snapshot id is a hash of the content (data files, config hash, input hashes), so
the same data gives the same id, and two snapshots that differ never collide. The code
that made it is recorded in the manifest (`code`) but is not part of the id: code that
writes the same bytes from the same inputs and settings makes the same snapshot (a
refactor keeps every snapshot, and the reviews recorded on it). The folder is
assembled under a temporary name and renamed into place in one step: a killed run
leaves no half-written snapshot. `index.jsonl` beside the snapshots lists them in
creation order (latest last); a lock beside it (`.index.lock`) lets one writer at a
time publish and append, so runs at once never lose a line.

    from core.snapshot import load_dataset           # or: from curate import load_dataset
    ds = load_dataset("data/snapshots/banking77/<id>")          # DatasetDict
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import polars as pl

import core
from core.cards import write_dataset_card
from core.config import Config, resolve_path
from core.io import atomic_path, file_lock, publish_tree, temporary_folder, write_json, write_table
from core.report import plot_class_mix
from core.schema import StageCounts

DATA_FILES = ("train.parquet", "eval.parquet", "rejected.parquet", "quarantine.parquet")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def code_version(code_key: str | None) -> dict:
    """Package version, git commit (when in a checkout) and the key of the code that made the data
    (the curation stages' code keys, combined by the flow: flows/cache.py)."""
    root = Path(core.__file__).resolve().parent.parent
    commit = None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": core.__version__, "git_commit": commit, "source_sha256": code_key}


def input_hashes(config: Config) -> list[dict]:
    """sha256 and size of every source file the config reads (folders: of every file inside, in order)."""
    out = []
    for split, sources in (("train", config.data.train), ("eval", config.data.eval)):
        for source in sources:
            path = resolve_path(source.path)
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for f in files:
                out.append({"split": split, "path": str(f if not path.is_dir() else Path(source.path) / f.relative_to(path)),
                            "sha256": file_sha256(f), "bytes": f.stat().st_size})
    return out


def class_distribution(df: pl.DataFrame) -> dict[str, int]:
    counts = df.group_by("label").len().sort("label")
    return {row["label"]: row["len"] for row in counts.iter_rows(named=True)}


def write_snapshot(
    root: str | Path,
    name: str,
    *,
    train: pl.DataFrame,
    eval: pl.DataFrame,
    rejected: pl.DataFrame,
    quarantine: pl.DataFrame,
    stages: list[StageCounts],
    config: dict,
    config_hash: str,
    inputs: list[dict],
    extra: dict | None = None,
    ingested: pl.DataFrame | None = None,
    plan: pl.DataFrame | None = None,
    code_key: str | None = None,
) -> Path:
    """Write a snapshot atomically and return its folder (an existing identical one is reused).

    `code_key` names the code that made the rows (recorded in the manifest, not part of the id)."""
    base = Path(root) / name
    tmp = temporary_folder(base)
    try:
        for fname, frame in zip(DATA_FILES, (train, eval, rejected, quarantine)):
            write_table(frame, tmp / fname)
        files = {f: file_sha256(tmp / f) for f in DATA_FILES}
        code = code_version(code_key)
        identity = {"files": files, "config_hash": config_hash, "inputs": inputs}
        snapshot_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        manifest = {
            "snapshot_id": snapshot_id,
            "name": name,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "config_hash": config_hash,
            "config": config,
            "inputs": inputs,
            "code": code,
            "stages": [s.to_dict() for s in stages],
            "rows": {"train": train.height, "eval": eval.height, "rejected": rejected.height, "quarantine": quarantine.height},
            "class_distribution": {
                "ingested": class_distribution(ingested.filter(pl.col("split") == "train")) if ingested is not None else {},
                "train": class_distribution(train),
                "eval": class_distribution(eval),
            },
            "files": files,
            "review": None,
            **(extra or {}),
        }
        if plan is not None:
            manifest["balance_plan"] = plan.to_dicts()
            plot_class_mix(
                manifest["class_distribution"]["ingested"] or class_distribution(train),
                dict(zip(plan["label"], plan["planned"])),
                manifest["class_distribution"]["train"],
                tmp / "class_mix.png",
                title=f"{name}: train rows per class (before curation, planned, in this snapshot)",
            )
        write_json(manifest, tmp / "manifest.json")
        write_dataset_card(tmp, manifest, train, eval)  # README.md: datasets.load_dataset(folder) reads its splits
        publish_tree(tmp)
        final = base / snapshot_id
        # One writer at a time publishes into this dataset's folder and its index (other runs, other workers).
        with index_lock(base):
            if final.exists():
                # Same content, same id: the existing snapshot stands (immutable); it is the latest again.
                _append_index(base, read_manifest(final) | {"created_at": manifest["created_at"]})
                return final
            os.replace(tmp, final)
            _append_index(base, manifest)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def index_lock(base: Path):
    """The lock that serializes writes to a dataset's snapshot folder and index.jsonl (and its reviews)."""
    return file_lock(base / ".index.lock")


def _append_index(base: Path, manifest: dict) -> None:
    """Add the snapshot as the latest line of index.jsonl (under index_lock: read, add, replace)."""
    index = base / "index.jsonl"
    lines = index.read_text().splitlines() if index.exists() else []
    if lines and json.loads(lines[-1])["snapshot_id"] == manifest["snapshot_id"]:
        return
    lines.append(json.dumps({"snapshot_id": manifest["snapshot_id"], "created_at": manifest["created_at"]}))
    with atomic_path(index) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def list_snapshots(root: str | Path, name: str) -> list[str]:
    """Snapshot ids of `name` in creation order (latest last)."""
    index = Path(root) / name / "index.jsonl"
    if not index.exists():
        return []
    ids = [json.loads(line)["snapshot_id"] for line in index.read_text().splitlines() if line.strip()]
    return [i for i in ids if (Path(root) / name / i / "manifest.json").exists()]


MIN_PREFIX = 4  # an id prefix shorter than this names a snapshot by chance (12 hex digits in an id)
SHOWN = 20  # candidates listed in an error


class SnapshotNotFound(FileNotFoundError):
    """A reference that names no snapshot, or more than one; the message lists the candidates."""


def _snapshots(root: Path) -> list[tuple[str, str]]:
    """Every (dataset, id) under root that has a manifest, sorted (folders listed, not globbed)."""
    if not root.is_dir():
        return []
    out = []
    for dataset in sorted(p for p in root.iterdir() if p.is_dir()):
        out += [(dataset.name, f.name) for f in sorted(dataset.iterdir()) if (f / "manifest.json").is_file()]
    return out


def _listed(candidates: list[tuple[str, str]]) -> str:
    shown = [f"{d}/{i}" for d, i in candidates[:SHOWN]]
    more = f" and {len(candidates) - SHOWN} more" if len(candidates) > SHOWN else ""
    return ", ".join(shown) + more if shown else "none"


def resolve_snapshot(ref: str | Path, root: str | Path = "data/snapshots") -> Path:
    """The one snapshot folder `ref` names: a folder (holding manifest.json), a dataset name (its
    latest snapshot), `name@latest`, `name@ID`, a full id or an id prefix of at least MIN_PREFIX
    characters that matches one snapshot only. Anything else is a ReviewError listing candidates."""
    root = Path(root)
    text = str(ref).strip()
    if not text:
        raise SnapshotNotFound(f"an empty snapshot reference: give a snapshot folder, a dataset name or an id "
                          f"(snapshots under {root}: {_listed(_snapshots(root))})")
    if isinstance(ref, Path) or "/" in text or text in (".", ".."):
        if (Path(ref) / "manifest.json").is_file():
            return Path(ref)
        raise SnapshotNotFound(f"no snapshot folder {text!r}: it holds no manifest.json")
    if (Path(text) / "manifest.json").is_file():  # a snapshot folder in the working folder
        return Path(text)
    name, at, which = text.partition("@")
    every = _snapshots(root)
    datasets = {d for d, _ in every}
    if name in datasets:
        ids = list_snapshots(root, name) or [i for d, i in every if d == name]
        if which in ("", "latest"):
            return root / name / ids[-1]
        pool, prefix = [(d, i) for d, i in every if d == name], which
    elif at:
        raise SnapshotNotFound(f"no dataset {name!r} under {root} (datasets: {', '.join(sorted(datasets)) or 'none'})")
    else:
        pool, prefix = every, text
    exact = [(d, i) for d, i in pool if i == prefix]
    if len(exact) == 1:
        return root / exact[0][0] / exact[0][1]
    matches = exact or [(d, i) for d, i in pool if i.startswith(prefix)]
    if not matches:
        raise SnapshotNotFound(f"no snapshot {text!r} under {root}: not a dataset name, an id or the start of one "
                          f"(snapshots: {_listed(every)})")
    if len(prefix) < MIN_PREFIX and not exact:
        raise SnapshotNotFound(f"snapshot {text!r}: an id prefix needs at least {MIN_PREFIX} characters; "
                          f"it would match {_listed(matches)}")
    if len(matches) > 1:
        raise SnapshotNotFound(f"snapshot {text!r} is ambiguous: it matches {_listed(matches)}; give more of the id, "
                          "name@id or the folder")
    return root / matches[0][0] / matches[0][1]


def read_manifest(snapshot: str | Path) -> dict:
    return json.loads((Path(snapshot) / "manifest.json").read_text())


def verify_snapshot(snapshot: str | Path) -> None:
    """Raise if a data file's hash differs from the manifest (tampered or damaged)."""
    snapshot = Path(snapshot)
    manifest = read_manifest(snapshot)
    for fname, digest in manifest["files"].items():
        if file_sha256(snapshot / fname) != digest:
            raise ValueError(f"{snapshot / fname}: content does not match the manifest")


def load_dataset(snapshot: str | Path, split: str | None = None, *, root: str | Path = "data/snapshots"):
    """Load a snapshot as a Hugging Face `datasets.DatasetDict` (or one `Dataset` with split=)."""
    import datasets

    folder = resolve_snapshot(snapshot, root)
    splits = ("train", "eval") if split is None else (split,)
    loaded = {
        s: datasets.Dataset.from_parquet(str(folder / f"{s}.parquet"), keep_in_memory=True) for s in splits
    }
    return loaded[split] if split is not None else datasets.DatasetDict(loaded)
