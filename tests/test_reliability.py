"""Killed runs, determinism and a full disk: the curation stages never leave a half-written dataset.

Each run here is a child process (`python -c CURATE ...`) that runs the flow's steps
(ingest -> clean -> dedupe -> balance -> snapshot) without Prefect, so it can be killed
with SIGKILL at any moment and re-run against the same cache and snapshot folders.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from core.snapshot import load_dataset, verify_snapshot
from tests.conftest import ROOT

CURATE = """
import sys
from tests.conftest import curate_steps
print(curate_steps(sys.argv[1], sys.argv[2:]))
"""


def _outputs(root: Path) -> list[str]:
    return ["allow_outside_paths=true", f"output.snapshots={root / 'snap'}", f"output.runs={root / 'runs'}",
            f"output.cache={root / 'cache'}"]


def _curate(overrides: list[str], *, hashseed: str = "0", config: str = "configs/banking77.yaml") -> Path:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    out = subprocess.run([sys.executable, "-c", CURATE, config, *overrides], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_runs_give_byte_identical_data_and_the_same_snapshot_id(tmp_path):
    """Same inputs, config and seed, separate caches, different hash seeds: the same bytes."""
    a = _curate(_outputs(tmp_path / "a"), hashseed="1")
    b = _curate(_outputs(tmp_path / "b"), hashseed="2")
    assert a.name == b.name
    for name in ("train.parquet", "eval.parquet", "rejected.parquet", "quarantine.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for stage in ("01-ingest", "02-clean", "03-dedupe", "04-balance"):
        da = next((tmp_path / "a" / "cache" / "banking77" / stage).iterdir())
        db = next((tmp_path / "b" / "cache" / "banking77" / stage).iterdir())
        assert da.name == db.name  # the same cache key
        assert (da / "rows.parquet").read_bytes() == (db / "rows.parquet").read_bytes(), stage


def _big_input(tmp_path: Path, copies: int) -> Path:
    """The banking77 sample repeated with numbered variants: enough rows that each stage takes a while."""
    src = (ROOT / "data" / "banking77" / "raw" / "messages.jsonl").read_bytes().split(b"\n")
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as fh:
        for k in range(copies):
            for line in src:
                try:
                    rec = json.loads(line)
                except ValueError:
                    fh.write(line + b"\n")  # the sample's own broken lines stay broken
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("text"), str):
                    rec["text"] = f"{rec['text']} (ticket {k})"
                fh.write(json.dumps(rec).encode() + b"\n")
    return path


def _invariants(root: Path) -> None:
    """What a killed run may leave: complete folders under their final names, temporaries, nothing else."""
    for stage_dir in (root / "cache" / "banking77").glob("*"):
        for out in stage_dir.iterdir():
            if out.name.startswith("."):
                continue  # a killed run's scratch space (never read), a key's lock file
            assert (out / "counts.json").is_file(), out
            for table in out.glob("*.parquet"):
                pl.read_parquet(table)  # readable, complete
    snaps = root / "snap" / "banking77"
    if snaps.is_dir():
        for snap in snaps.iterdir():
            if snap.is_dir() and not snap.name.startswith(".tmp-"):
                verify_snapshot(snap)
        if (snaps / "index.jsonl").exists():
            for line in (snaps / "index.jsonl").read_text().splitlines():
                json.loads(line)


def _done(root: Path, stage: str) -> bool:
    return any((d / "counts.json").is_file() for d in (root / "cache" / "banking77" / stage).glob("[!.]*"))


def _writing_snapshot(root: Path) -> bool:
    return any((root / "snap" / "banking77").glob(".tmp-*"))


@pytest.mark.slow
def test_kill_minus_nine_at_any_moment_then_rerun_gives_the_uninterrupted_snapshot(tmp_path):
    big = _big_input(tmp_path, copies=100)  # ~350k records: a few seconds per stage
    data = f"data.train=[{{path: {big}}}]"
    reference = _curate([*_outputs(tmp_path / "ref"), data])

    root = tmp_path / "killed"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    # an earlier snapshot (other settings, its own cache) in the same snapshot folder: it must stay intact
    previous = _curate([*_outputs(root), f"output.cache={tmp_path / 'prev-cache'}", data, "clean.min_chars=12"])
    previous_bytes = {p.name: p.read_bytes() for p in previous.iterdir()}
    # Kill when each stage is under way: a run resumes after the last completed stage, so
    # each re-run is killed further along (ingest, clean, dedupe, balance, snapshot write).
    moments = {
        "ingest": lambda started: any((root / "cache" / "banking77" / "01-ingest").glob(".tmp-*")),  # reading
        "clean": lambda started: _done(root, "01-ingest"),
        "dedupe": lambda started: _done(root, "02-clean"),
        "balance": lambda started: _done(root, "03-dedupe") and not _done(root, "04-balance"),
        "snapshot": lambda started: _writing_snapshot(root),
    }
    killed = []
    for name, when in moments.items():
        proc = subprocess.Popen([sys.executable, "-c", CURATE, "configs/banking77.yaml", *_outputs(root), data], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.time()
        while proc.poll() is None and not when(started):
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed.append(name)
        proc.wait()
        _invariants(root)
    assert {"ingest", "clean", "dedupe"} <= set(killed), killed
    final = _curate([*_outputs(root), data])
    _invariants(root)
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == previous_bytes
    assert final.name == reference.name != previous.name
    assert (final / "train.parquet").read_bytes() == (reference / "train.parquet").read_bytes()


@pytest.mark.slow
def test_two_runs_of_one_config_at_once_end_with_one_consistent_cache_and_index(tmp_path):
    """Two `curate run` (two terminals) of the same config into the same folders, started together:
    both finish, each stage key has one complete folder, one snapshot, an index whose every line names it,
    nothing temporary left behind, and the second run took the first's stages as hits."""
    root = tmp_path / "shared"
    sets = [a for o in [*_outputs(root), "synthesis.enabled=false"] for a in ("--set", o)]
    cmd = [str(Path(sys.executable).parent / "curate"), "run", "--no-train", *sets]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    _invariants(root)
    cache = root / "cache" / "banking77"
    for stage in ("01-ingest", "02-clean", "03-dedupe", "04-balance"):
        keys = [d for d in (cache / stage).iterdir() if not d.name.startswith(".")]
        assert len(keys) == 1, (stage, keys)
        assert not list((cache / stage).glob(".tmp-*")) and not list((cache / stage).glob(".old-*"))
    snaps = root / "snap" / "banking77"
    ids = [json.loads(line)["snapshot_id"] for line in (snaps / "index.jsonl").read_text().splitlines()]
    folders = [p.name for p in snaps.iterdir() if p.is_dir()]
    assert len(folders) == 1 and set(ids) == set(folders)
    # each stage computed once: one of the two runs logged it as computed, the other as a hit
    for stage in ("ingest", "clean", "dedupe"):
        lines = [line for _, err in outs for line in err.splitlines() if f"| {stage}: " in line and " in " in line]
        assert sorted(line.split(f"| {stage}: ")[1].split(" ")[0] for line in lines) == ["computed", "hit"], lines


def test_a_full_disk_during_a_snapshot_write_leaves_the_previous_snapshot_readable(tmp_path, monkeypatch):
    import core.snapshot as snapshot
    from core.schema import empty_dropped, empty_quarantine
    from tests.trainers import make_snapshot

    rows = make_snapshot(tmp_path / "rows")
    train, eval_ = pl.read_parquet(rows / "train.parquet"), pl.read_parquet(rows / "eval.parquet")

    def write(train_rows):
        return snapshot.write_snapshot(tmp_path / "snap", "tiny", train=train_rows, eval=eval_, rejected=empty_dropped(),
                                       quarantine=empty_quarantine(), stages=[], config={}, config_hash="x", inputs=[])

    first = write(train)
    before = sorted(p.name for p in first.parent.iterdir())
    calls = {"n": 0}
    real_write = snapshot.write_table

    def write_until_full(frame, path):
        calls["n"] += 1
        if calls["n"] == 2:  # the second table of the next snapshot hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(frame, path)

    monkeypatch.setattr(snapshot, "write_table", write_until_full)
    with pytest.raises(OSError, match="No space left"):
        write(train.head(3))
    assert sorted(p.name for p in first.parent.iterdir()) == before  # no new folder, no leftover, index unchanged
    verify_snapshot(first)
    ds = load_dataset(first)
    assert ds["train"].num_rows == train.height
