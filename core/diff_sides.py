"""The two sides of a dataset diff, as core/diff.py compares them: a snapshot, or a raw input file.

    side = load_snapshot("data/snapshots/banking77/<id>")
    a_ref, b_folder = resolve_pair(None, None, root="data/snapshots")     # latest vs its predecessor
    raw, b = load_raw("data/banking77/raw/messages.jsonl", load_snapshot(b_folder))

A raw file is read exactly as ingest reads it, with B's configuration (field names,
class set), so its row ids are the ids ingest gives; when it is byte-identical to one of
B's inputs, B is restricted to that source and rows are matched by (source, line).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from core.config import Config, ConfigError, resolve_path
from core.ingest import ingest
from core.schema import ROW_SCHEMA
from core.snapshot import file_sha256, list_snapshots, read_manifest, resolve_snapshot

# Columns the diff reads; any other column (provenance of synthetic rows, ...) is ignored.
KEPT_SCHEMA: dict[str, pl.DataType] = {k: v for k, v in ROW_SCHEMA.items() if k != "pii"}
REJECTED_SCHEMA: dict[str, pl.DataType] = {
    **KEPT_SCHEMA,
    "stage": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    "duplicate_of": pl.String(),
    "cluster": pl.String(),
}
QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    "split": pl.String(),
    "source": pl.String(),
    "line": pl.Int64(),
    "reason": pl.String(),
}
RAW_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")


class DiffError(ValueError):
    """The two sides cannot be compared (missing snapshot, unreadable raw file)."""


@dataclass
class Side:
    """One version of the dataset as the diff sees it."""

    kind: str  # "snapshot" or "raw"
    ref: str  # folder or file path
    label: str  # short name for headings: snapshot id or file name
    manifest: dict | None
    kept: pl.DataFrame  # KEPT_SCHEMA: train and eval rows
    rejected: pl.DataFrame  # REJECTED_SCHEMA
    quarantine: pl.DataFrame  # QUARANTINE_COLUMNS

    def info(self) -> dict:
        m = self.manifest or {}
        rows = {
            "train": int(self.kept.filter(pl.col("split") == "train").height),
            "eval": int(self.kept.filter(pl.col("split") == "eval").height),
            "rejected": int(self.rejected.height),
            "quarantine": int(self.quarantine.height),
        }
        return {
            "kind": self.kind,
            "ref": self.ref,
            "id": self.label,
            "name": m.get("name"),
            "created_at": m.get("created_at"),
            "rows": rows,
            "review": m.get("review"),
        }


def _read(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The schema's columns of a Parquet file; absent columns become null (false for synthetic)."""
    if not path.exists():
        return pl.DataFrame(schema=schema)
    present = pl.scan_parquet(path, glob=False).collect_schema()  # a path holding [ or * is a name, not a pattern
    df = pl.read_parquet(path, columns=[c for c in schema if c in present], glob=False)
    missing = []
    for name, dtype in schema.items():
        if name not in df.columns:
            missing.append((pl.lit(False) if name == "synthetic" else pl.lit(None)).cast(dtype).alias(name))
    if missing:
        df = df.with_columns(missing)
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])


def load_snapshot(folder: str | Path) -> Side:
    folder = Path(folder)
    manifest = read_manifest(folder)
    kept = pl.concat([_read(folder / "train.parquet", KEPT_SCHEMA), _read(folder / "eval.parquet", KEPT_SCHEMA)])
    return Side(
        kind="snapshot",
        ref=str(folder),
        label=manifest.get("snapshot_id", folder.name),
        manifest=manifest,
        kept=kept.with_columns(pl.col("synthetic").fill_null(False)),
        rejected=_read(folder / "rejected.parquet", REJECTED_SCHEMA),
        quarantine=_read(folder / "quarantine.parquet", QUARANTINE_COLUMNS),
    )


def is_raw_file(ref: str | Path) -> bool:
    path = Path(ref)
    return path.is_file() and path.suffix.lower() in RAW_SUFFIXES


def load_raw(path: str | Path, against: Side, *, split: str | None = None) -> tuple[Side, Side]:
    """Read a raw input file as ingest would with B's configuration; return (raw side, B restricted).

    The split is the one B's manifest gives the file (matched by sha256, then path),
    else `split`, else "train". When the file is one of B's inputs, B's rows are
    restricted to that source, and raw rows take B's row id of the same (source, line).
    """
    path = Path(path)
    if against.manifest is None or "config" not in against.manifest:
        raise DiffError("a raw file is compared with a snapshot: B must be a snapshot")
    digest = file_sha256(path)
    match = None
    for entry in against.manifest.get("inputs", []):
        if entry.get("sha256") == digest:
            match = entry
            break
    if match is None:
        for entry in against.manifest.get("inputs", []):
            if Path(entry.get("path", "")).resolve() == path.resolve():
                match = entry
                break
    split = split or (match["split"] if match else "train")
    # Rows carry the source as the config names it; the manifest's inputs may hold it resolved.
    source = str(path)
    if match is not None:
        named = pl.concat([against.kept.select("source"), against.rejected.select("source")]).unique()["source"]
        source = next((s for s in named.to_list() if s and resolve_path(s).resolve() == resolve_path(match["path"]).resolve()), match["path"])
    cfg = dict(against.manifest["config"])
    cfg["data"] = {"train": [], "eval": [], **{split: [{"path": str(path.resolve())}]}}
    try:
        config = Config.model_validate(cfg)
        rows, quarantine, _ = ingest(config)
    except (ConfigError, ValueError, OSError) as exc:
        raise DiffError(f"{path}: cannot read as B's input: {exc}") from exc
    rows = rows.with_columns(source=pl.lit(source))
    quarantine = quarantine.with_columns(source=pl.lit(source))
    b = against
    if match is not None:
        same = (pl.col("source") == source) & (pl.col("split") == split)
        b = Side(
            kind=b.kind, ref=b.ref, label=b.label, manifest=b.manifest,
            kept=b.kept.filter(same), rejected=b.rejected.filter(same), quarantine=b.quarantine.filter(same),
        )
        if match.get("sha256") == digest:
            # Byte-identical file: (source, line) names the same record on both sides.
            by_line = pl.concat([b.kept.select("line", "row_id"), b.rejected.select("line", "row_id")]).unique(
                "line", keep="first", maintain_order=True
            )
            rows = rows.join(by_line.rename({"row_id": "_b_id"}), on="line", how="left").with_columns(
                row_id=pl.coalesce("_b_id", "row_id")
            ).drop("_b_id")
    raw = Side(
        kind="raw",
        ref=str(path),
        label=path.name,
        manifest=None,
        kept=rows.select([pl.col(c).cast(t) for c, t in KEPT_SCHEMA.items()]),
        rejected=pl.DataFrame(schema=REJECTED_SCHEMA),
        quarantine=quarantine.select([pl.col(c).cast(t) for c, t in QUARANTINE_COLUMNS.items()]),
    )
    return raw, b


def resolve_pair(
    a: str | Path | None, b: str | Path | None, *, root: str | Path = "data/snapshots", name: str | None = None
) -> tuple[str, Path]:
    """(A, B) folders or file: B defaults to the latest snapshot, A to B's predecessor in index.jsonl.

    A may be a raw file. `name` picks the dataset when B is not given (default: the
    dataset of A, else the only dataset under `root`).
    """
    root = Path(root)
    if b is None:
        if name is None and a is not None and not is_raw_file(a):
            name = resolve_snapshot(a, root).parent.name
        if name is None:
            names = sorted(p.name for p in root.iterdir() if (p / "index.jsonl").exists()) if root.exists() else []
            if len(names) != 1:
                raise DiffError(f"name the dataset (--name): {len(names)} datasets under {root}: {', '.join(names)}")
            name = names[0]
        ids = list_snapshots(root, name)
        if not ids:
            raise DiffError(f"no snapshots of {name!r} under {root}")
        b_folder = root / name / ids[-1]
    else:
        try:
            b_folder = resolve_snapshot(b, root)
        except FileNotFoundError as exc:
            raise DiffError(str(exc)) from None
    if a is None:
        ids = list_snapshots(b_folder.parent.parent, b_folder.parent.name)
        if b_folder.name not in ids or ids.index(b_folder.name) == 0:
            raise DiffError(f"snapshot {b_folder.name} has no predecessor in {b_folder.parent / 'index.jsonl'}")
        return str(b_folder.parent / ids[ids.index(b_folder.name) - 1]), b_folder
    if is_raw_file(a):
        return str(a), b_folder
    try:
        return str(resolve_snapshot(a, root)), b_folder
    except FileNotFoundError as exc:
        raise DiffError(str(exc)) from None

