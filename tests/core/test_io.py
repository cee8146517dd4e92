"""Atomic writes are durable, shared and safe under concurrency: modes, locks, publishing races, the index."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import stat
from pathlib import Path

import polars as pl
import pytest

from core.config import load_config
from core.io import atomic_folder, atomic_path, file_lock, read_table, write_json, write_table
from core.schema import StageCounts
from core.snapshot import list_snapshots, write_snapshot
from flows.cache import cached
from tests.conftest import curate_steps

ROWS = pl.DataFrame({"row_id": ["r1"], "text": ["hello there"], "label": ["a"], "split": ["train"]})


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_and_folders_get_the_umasks_modes_not_a_temporarys(tmp_path, umask_022):
    """A temporary is created 0600 / 0700; what is renamed into place is 0644 / 0755 under umask 022."""
    write_table(ROWS, tmp_path / "rows.parquet")
    write_json({"a": 1}, tmp_path / "a.json")
    with atomic_folder(tmp_path / "folder") as tmp:
        (tmp / "inner").mkdir()
        (tmp / "inner" / "made-by-a-library.bin").write_bytes(b"x")
        write_json({}, tmp / "marker.json")
    assert _mode(tmp_path / "rows.parquet") == 0o644
    assert _mode(tmp_path / "a.json") == 0o644
    assert _mode(tmp_path / "folder") == 0o755
    assert _mode(tmp_path / "folder" / "inner") == 0o755
    assert _mode(tmp_path / "folder" / "marker.json") == 0o644
    assert _mode(tmp_path / "folder" / "inner" / "made-by-a-library.bin") == 0o644


def test_a_stricter_umask_is_kept(tmp_path):
    old = os.umask(0o077)
    try:
        write_json({"a": 1}, tmp_path / "a.json")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == 0o600


def test_a_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "f") as tmp:
        (tmp / "x").write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_a_complete_folder_under_the_name_stands_when_keep_says_so(tmp_path):
    final = tmp_path / "key"
    with atomic_folder(final) as tmp:
        (tmp / "done").write_text("first")
    with atomic_folder(final, keep=lambda f: (f / "done").is_file()) as tmp:
        (tmp / "done").write_text("second")
    assert (final / "done").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no temporary, no folder set aside
    with atomic_folder(final) as tmp:  # without keep: replaced
        (tmp / "done").write_text("third")
    assert (final / "done").read_text() == "third"


def _publish(final: str, n: int, barrier) -> None:
    barrier.wait()
    for k in range(n):
        with atomic_folder(final, keep=lambda f: (f / "done").is_file() and k % 2 == 0) as tmp:
            (tmp / "payload").write_text(str(os.getpid()) * 1000)
            (tmp / "done").write_text("1")


def test_many_processes_publishing_one_folder_always_leave_it_complete(tmp_path):
    """Writers replacing and keeping the same folder at once: every one finishes, and the folder is whole."""
    final = tmp_path / "key"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(6)
    procs = [ctx.Process(target=_publish, args=(str(final), 20, barrier)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 6
    assert sorted(p.name for p in final.iterdir()) == ["done", "payload"]
    assert len(set((final / "payload").read_text())) >= 1 and len((final / "payload").read_text()) % 1000 == 0
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def _count_under_lock(path: str, lock: str, n: int, barrier) -> None:
    barrier.wait()
    for _ in range(n):
        with file_lock(lock):
            value = int(Path(path).read_text())  # a read-modify-write that loses updates without the lock
            Path(path).write_text(str(value + 1))


def test_the_file_lock_serializes_processes(tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_count_under_lock, args=(str(counter), str(tmp_path / ".lock"), 50, barrier))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert counter.read_text() == "200"


def _snapshot(root: str, k: int, barrier) -> None:
    barrier.wait()
    train = ROWS.with_columns(pl.lit(f"text number {k}").alias("text"))
    write_snapshot(root, "t", train=train, eval=ROWS.clear(), rejected=pl.DataFrame(), quarantine=pl.DataFrame(),
                   stages=[StageCounts("ingest", 1, 1)], config={}, config_hash=str(k), inputs=[])


def test_eight_processes_writing_snapshots_at_once_lose_no_index_line(tmp_path):
    """Was: a read-modify-write of index.jsonl without a lock kept 2-4 of 8 lines."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_snapshot, args=(str(tmp_path), k, barrier)) for k in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    ids = list_snapshots(tmp_path, "t")
    assert len(ids) == len(set(ids)) == 8
    folders = sorted(p.name for p in (tmp_path / "t").iterdir() if not p.name.startswith("."))
    assert folders == sorted([*ids, "index.jsonl"])
    for line in (tmp_path / "t" / "index.jsonl").read_text().splitlines():
        assert json.loads(line)["snapshot_id"] in ids


def _same_snapshot(root: str, barrier) -> None:
    barrier.wait()
    write_snapshot(root, "t", train=ROWS, eval=ROWS.clear(), rejected=pl.DataFrame(), quarantine=pl.DataFrame(),
                   stages=[StageCounts("ingest", 1, 1)], config={}, config_hash="same", inputs=[])


def test_processes_writing_the_same_snapshot_at_once_all_succeed_with_one_folder(tmp_path):
    """Was: the second os.replace onto the published folder failed (directory not empty)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_same_snapshot, args=(str(tmp_path), barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    ids = list_snapshots(tmp_path, "t")
    assert len(set(ids)) == 1
    assert [p.name for p in (tmp_path / "t").iterdir() if not p.name.startswith(".")] == sorted([ids[0], "index.jsonl"])


def _cached(cache: str, log: str, barrier) -> None:
    cfg = load_config("configs/banking77.yaml", [f"output.cache={cache}", "allow_outside_paths=true"])

    def compute(out: Path) -> None:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        write_json({}, out / "counts.json")

    barrier.wait()
    print(cached(cfg, "99-test", _cached, {"x": 1}, compute).cache)


def test_two_processes_needing_the_same_stage_compute_it_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    log = tmp_path / "computed.log"
    procs = [ctx.Process(target=_cached, args=(str(tmp_path / "cache"), str(log), barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 3
    assert len(log.read_text().splitlines()) == 1


def test_a_folder_name_with_glob_characters_is_a_name(tmp_path):
    """polars reads a path as a glob pattern by default: 'runs [team a]/rows.parquet' matched nothing."""
    folder = tmp_path / "runs [team a]*"
    for name in ("rows.parquet", "rows.jsonl", "rows.csv"):
        write_table(ROWS, folder / name)
        assert read_table(folder / name)["text"].to_list() == ["hello there"], name


def test_the_curation_runs_in_a_folder_whose_name_has_glob_characters(tmp_path):
    root = tmp_path / "team [a]"
    snap = curate_steps("configs/banking77.yaml", ["allow_outside_paths=true", f"output.snapshots={root / 'snap'}",
                                                    f"output.cache={root / 'cache'}", "synthesis.enabled=false"])
    assert (snap / "manifest.json").is_file() and read_table(snap / "train.parquet").height > 4000
