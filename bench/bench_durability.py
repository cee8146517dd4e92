"""What durable, shared, concurrent-safe writes cost: the banking77 snapshot and a cache stage, side by side.

    .venv/bin/python bench/bench_durability.py              # 5 repeats each
    .venv/bin/python bench/bench_durability.py --repeats 10

`durable` is core.io as shipped: every published file and folder fsynced (the folder
after its rename too), the umask's modes, the snapshot's publish and index append under
a file lock, a cache key computed under its lock. `baseline` is the same writes with
those four switched off (fsync, chmod and the locks replaced by no-ops), as before
issue 25. Also: 8 processes writing distinct snapshots at once, how many index lines
survive with and without the lock.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import polars as pl

import core.io
import core.snapshot
from core.config import load_config
from core.model import DEFAULT_MODEL_DIR
from core.schema import StageCounts
from core.snapshot import list_snapshots, write_snapshot
from flows import tasks


def curate(overrides: list[str]) -> Path:
    """The sample's snapshot: the flow's curation tasks as plain functions."""
    cfg = load_config("configs/banking77.yaml", overrides)
    ingested = tasks.ingest.fn(cfg)
    cleaned = tasks.clean.fn(cfg, ingested)
    deduped = tasks.dedupe.fn(cfg, cleaned)
    stages = [ingested, cleaned, deduped, tasks.balance.fn(cfg, deduped)]
    return tasks.snapshot.fn(cfg, stages, str(DEFAULT_MODEL_DIR)).path


def _frames(snapshot: Path) -> dict[str, pl.DataFrame]:
    return {n: pl.read_parquet(snapshot / f"{n}.parquet") for n in ("train", "eval", "rejected", "quarantine")}


def _write(root: Path, frames: dict, k: int) -> None:
    write_snapshot(root, "b", **frames, stages=[StageCounts("ingest", 1, 1)], config={}, config_hash=str(k), inputs=[])


@contextlib.contextmanager
def baseline():
    """core.io and core.snapshot with fsync, chmod and the locks as no-ops."""
    with mock.patch.object(core.io.os, "fsync", lambda fd: None), \
            mock.patch.object(core.io.os, "chmod", lambda *a, **k: None), \
            mock.patch.object(core.io, "_fsync_dir", lambda folder: None), \
            mock.patch.object(core.snapshot, "index_lock", lambda base: contextlib.nullcontext()):
        yield


def time_snapshots(frames: dict, repeats: int) -> float:
    times = []
    with tempfile.TemporaryDirectory() as d:
        for k in range(repeats):
            started = time.perf_counter()
            _write(Path(d), frames, k)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _racer(root: str, frames_dir: str, k: int, locked: bool, barrier) -> None:
    frames = _frames(Path(frames_dir))
    barrier.wait()
    with (contextlib.nullcontext() if locked else baseline()):
        _write(Path(root), frames, k)


def race(frames_dir: Path, locked: bool, n: int = 8) -> int:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        barrier = ctx.Barrier(n)
        procs = [ctx.Process(target=_racer, args=(d, str(frames_dir), k, locked, barrier)) for k in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        return len(list_snapshots(d, "b"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        overrides = ["allow_outside_paths=true", f"output.snapshots={out / 'snap'}", f"output.cache={out / 'cache'}"]
        snap = curate(overrides)
        frames = _frames(snap)
        size = sum(f.stat().st_size for f in snap.iterdir()) / 1e6
        print(f"banking77 snapshot: {frames['train'].height} train rows, {size:.2f} MB on disk; "
              f"median of {args.repeats} writes")
        durable = time_snapshots(frames, args.repeats)
        with baseline():
            plain = time_snapshots(frames, args.repeats)
        print(f"| snapshot write | baseline {plain * 1000:.0f} ms | durable {durable * 1000:.0f} ms | "
              f"{durable / plain:.2f}x |")
        for locked in (False, True):
            kept = [race(snap, locked) for _ in range(3)]
            print(f"| 8 processes at once, index lock {'on' if locked else 'off'} | index lines kept of 8: {kept} |")
    print(f"cpu: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
