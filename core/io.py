"""Reading and writing tables by file extension, atomically.

Every write goes to a temporary file in the destination folder and is renamed
into place, so a killed process never leaves a half-written file under the final
name (os.replace is atomic on POSIX within one file system).

What is renamed into place is durable and shared: the file (every file of a folder) is
fsynced before the rename and its folder after it, so a power cut never leaves a name
pointing at lost bytes; and it gets the modes the process's umask gives a new file
(0644 / 0755 under umask 022), not the private ones of a temporary (0600 / 0700), so a
team's shared snapshot is readable by the team.

Two processes may publish under the same name at once (two runs of one config): a
folder already complete under the final name is left alone and the newcomer's copy is
discarded (`atomic_folder(..., keep=...)`), and `file_lock` serializes what must not
interleave (the cache's compute-once, the snapshot index's read-modify-write).

A temporary's name carries its owner, `@host~pid~`. What a killed process leaves
behind is removed by the next write into the same folder (`sweep_temporaries`): only
temporaries of this host whose process no longer runs, so a live writer, or one on
another machine sharing the disk, is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import polars as pl
from filelock import FileLock

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


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask (read by setting it and setting it back: there is no getter before 3.13)."""
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_tree(root: Path) -> None:
    """fsync every file and folder under `root` and give them the umask's modes (a temporary's are private)."""
    mask = _umask()
    for folder, dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(path, 0o666 & ~mask)
        os.chmod(folder, 0o777 & ~mask)
        _fsync_dir(Path(folder))


def file_lock(path: str | Path) -> FileLock:
    """An exclusive lock on `path` (created if missing) between processes and threads: `with file_lock(p): ...`.

    fcntl.flock underneath, so a killed holder releases it; it blocks until free."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), thread_local=False)


def folder_lock(folder: str | Path, root: str | Path) -> FileLock:
    """The lock of a published `folder` under `root`: root/.locks/<folder's path under root>.lock, so the
    folders beside it stay a listing of folders (a stage's keys, a dataset's runs); a folder outside `root`
    gets its lock under its parent's .locks."""
    folder, root = Path(folder), Path(root)
    if not folder.is_relative_to(root):  # a folder elsewhere (a user's own adapter): its parent holds the lock
        root = folder.parent
    return file_lock(root / ".locks" / folder.relative_to(root).parent / f"{folder.name}.lock")


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
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(final: str | Path, prefix: str = ".tmp-", *,
                  keep: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; if the block succeeds, it replaces `final`.

    A folder under the final name is therefore always complete. What is there before is
    replaced (an incomplete leftover), unless `keep(final)` says it is complete: then it
    stands and the new copy is discarded (another process published the same thing
    first). The old folder is renamed aside before the new one goes in, so no process
    ever deletes files under the final name while another reads them; one that another
    process publishes in between stands if `keep` says so, else it is replaced in turn.
    Every file is fsynced and given the umask's modes first. On failure the temporary
    is removed.
    """
    final = Path(final)
    tmp = temporary_folder(final.parent, prefix)
    try:
        yield tmp
        publish_tree(tmp)
        if keep is not None and keep(final):
            return
        for attempt in range(200):  # another process may publish between the two renames: then keep its or go again
            if final.exists():
                aside = Path(tempfile.mkdtemp(prefix=".old-" + owner_tag(), dir=final.parent))
                with contextlib.suppress(FileNotFoundError):  # another process moved it first
                    os.replace(final, aside / final.name)
                shutil.rmtree(aside, ignore_errors=True)
            try:
                os.replace(tmp, final)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if keep is not None and keep(final):  # a folder was published in between: it stands
                    return
                time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 20)))  # let the other writer finish
        else:
            raise OSError(f"{final}: other processes keep publishing this folder; gave up")
        _fsync_dir(final.parent)
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
        return pl.read_parquet(path, glob=False)
    if fmt == "csv":
        return pl.read_csv(path, infer_schema_length=0, glob=False)  # every column as text: nothing is coerced
    with open(path, "rb") as fh:  # a handle: read_ndjson would take a path holding [ or * as a glob pattern
        return pl.read_ndjson(fh)


def write_json(obj: Any, path: str | Path) -> Path:
    """Write `obj` as pretty, key-sorted JSON, atomically (same object, same bytes)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
