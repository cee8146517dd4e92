"""Reading and writing tables by file extension, atomically.

Every write goes to a temporary file in the destination folder and is renamed
into place, so a killed process never leaves a half-written file under the final
name (os.replace is atomic on POSIX within one file system).

A temporary's name carries its owner, `@host~pid~`. What a killed process leaves
behind is removed by the next write into the same folder (`sweep_temporaries`): only
temporaries of this host whose process no longer runs, so a live writer, or one on
another machine sharing the disk, is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
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


_OWNED = re.compile(r"@(?P<host>[^@~/]+)~(?P<pid>\d+)~")


def owner_tag() -> str:
    """This host and process, as temporaries' names carry them."""
    return f"@{socket.gethostname()}~{os.getpid()}~"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def sweep_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries a killed process left in `folder` (this host's, process gone); return them."""
    folder, host, removed = Path(folder), socket.gethostname(), []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _OWNED.search(entry.name) if entry.name.startswith(".") else None
        if m is None or m["host"] != host or _running(int(m["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):  # another sweeper was first
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def temporary_folder(parent: str | Path, prefix: str = ".tmp-") -> Path:
    """A new temporary folder in `parent`, named for its owner, after sweeping dead owners' ones."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(parent)
    return Path(tempfile.mkdtemp(prefix=prefix + owner_tag(), dir=parent))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}", suffix=".tmp", dir=path.parent)
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
    tmp = temporary_folder(final.parent, prefix)
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
