"""Reading and writing tables by file extension, atomically.

Every write goes to a temporary file in the destination folder and is renamed
into place, so a killed process never leaves a half-written file under the final
name (os.replace is atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import polars as pl

TABLE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def table_format(path: str | Path) -> str:
    """Return 'jsonl', 'csv' or 'parquet' from the file extension, or raise ValueError."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ValueError(
            f"{path}: unknown table format {suffix!r}; use one of {', '.join(sorted(TABLE_FORMATS))}"
        )
    return TABLE_FORMATS[suffix]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(final: str | Path, prefix: str = ".tmp-") -> Iterator[Path]:
    """Yield a temporary folder beside `final`; if the block succeeds, it replaces `final`.

    A folder under the final name is therefore always complete (what was there before,
    an incomplete leftover, is removed first); on failure the temporary is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_table(df: pl.DataFrame, path: str | Path) -> Path:
    """Write `df` to `path` in the format its extension names, atomically."""
    fmt = table_format(path)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            # Statistics off and one row group size: the same frame gives the same bytes.
            df.write_parquet(tmp, compression="zstd", statistics=False)
        elif fmt == "csv":
            df.write_csv(tmp)
        else:
            df.write_ndjson(tmp)
    return Path(path)


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a well-formed JSONL, CSV or Parquet file into a frame (for tools, not raw ingest)."""
    fmt = table_format(path)
    if fmt == "parquet":
        return pl.read_parquet(path)
    if fmt == "csv":
        return pl.read_csv(path, infer_schema_length=0)  # every column as text: nothing is coerced
    return pl.read_ndjson(path)


def write_json(obj: Any, path: str | Path) -> Path:
    """Write `obj` as pretty, key-sorted JSON, atomically (same object, same bytes)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
