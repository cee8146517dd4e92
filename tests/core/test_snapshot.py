"""Snapshots: atomic, immutable, content-addressed, one call to load as a Dataset."""

import json

import polars as pl
import pytest

from core.cards import dataset_card
from core.schema import StageCounts, empty_dropped, empty_quarantine
from core.snapshot import (
    SnapshotNotFound,
    list_snapshots,
    load_dataset,
    read_manifest,
    resolve_snapshot,
    verify_snapshot,
    write_snapshot,
)
from tests.conftest import curate_steps


def _rows(split, n):
    return pl.DataFrame(
        {
            "row_id": [f"{split}{i}" for i in range(n)],
            "split": split,
            "source": "x.jsonl",
            "line": list(range(1, n + 1)),
            "input": [f"text {i}" for i in range(n)],
            "output": ["a" if i % 2 else "b" for i in range(n)],
            "label": ["a" if i % 2 else "b" for i in range(n)],
            "pii": [[] for _ in range(n)],
            "synthetic": False,
        },
        schema_overrides={"pii": pl.List(pl.String)},
    )


def _write(root, train_n=4):
    stage = StageCounts("ingest", train_n + 2, train_n + 2).check()
    return write_snapshot(
        root, "demo", train=_rows("train", train_n), eval=_rows("eval", 2), rejected=empty_dropped(),
        quarantine=empty_quarantine(), stages=[stage], config={"k": 1}, config_hash="c0", inputs=[], code_key="c0de",
    )


def test_same_content_same_id_and_index_order(tmp_path):
    a = _write(tmp_path)
    assert _write(tmp_path) == a  # rewritten identically: same folder, not a new one
    b = _write(tmp_path, train_n=6)
    assert a != b
    assert list_snapshots(tmp_path, "demo") == [a.name, b.name]
    assert resolve_snapshot("demo", tmp_path) == b
    assert resolve_snapshot(a.name, tmp_path) == a
    assert not [p for p in (tmp_path / "demo").iterdir() if p.name.startswith(".tmp")]


def test_the_id_is_the_content_not_the_code(tmp_path, monkeypatch):
    """Code that writes the same bytes makes the same snapshot (a refactor keeps ids and reviews);
    the manifest still records which code it was."""
    import core.snapshot as snap

    a = _write(tmp_path / "a")
    monkeypatch.setattr(snap, "code_version", lambda code_key: {"package": "9", "git_commit": None, "source_sha256": "other"})
    b = _write(tmp_path / "b")
    assert a.name == b.name
    assert json.loads((b / "manifest.json").read_text())["code"]["source_sha256"] == "other"


def test_manifest_counts_and_distribution(tmp_path):
    folder = _write(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["rows"] == {"train": 4, "eval": 2, "rejected": 0, "quarantine": 0}
    assert manifest["class_distribution"]["train"] == {"a": 2, "b": 2}
    assert manifest["stages"][0]["stage"] == "ingest"
    assert manifest["code"]["source_sha256"] == "c0de" and manifest["code"]["package"]


def test_load_as_hf_dataset_in_one_call(tmp_path):
    folder = _write(tmp_path)
    ds = load_dataset(folder)
    assert ds["train"].num_rows == 4 and ds["eval"].num_rows == 2
    assert ds["train"][0]["input"] == "text 0"
    assert load_dataset(folder, "eval").num_rows == 2


def test_tampering_is_detected(tmp_path):
    folder = _write(tmp_path)
    verify_snapshot(folder)
    pl.DataFrame({"x": [1]}).write_parquet(folder / "train.parquet")
    with pytest.raises(ValueError, match="does not match the manifest"):
        verify_snapshot(folder)


def test_a_failed_write_leaves_no_snapshot(tmp_path, monkeypatch):
    import core.snapshot as snap

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(snap, "write_json", boom)
    with pytest.raises(OSError):
        _write(tmp_path)
    assert list((tmp_path / "demo").iterdir()) == []


def test_the_next_write_sweeps_what_killed_writers_left(tmp_path):
    """Temporaries of dead processes on this host go; a live writer's, another host's and unnamed ones stay."""
    import os
    import socket
    import subprocess
    import sys

    from core.io import owner_tag, write_table

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that no longer runs
    host, folder = socket.gethostname(), tmp_path / "demo"
    folder.mkdir()
    dead_dir = folder / f".tmp-@{host}~{gone.pid}~k1"
    dead_dir.mkdir()
    (dead_dir / "train.parquet").write_bytes(b"half a table")
    dead_file = folder / f".index.jsonl.@{host}~{gone.pid}~k2.tmp"
    dead_file.write_bytes(b"half a line")
    stay = [folder / f".tmp-{owner_tag()}live", folder / f".tmp-@another-host~{gone.pid}~k3", folder / ".tmp-unnamed"]
    for p in stay:
        p.mkdir()
    assert owner_tag() == f"@{host}~{os.getpid()}~"
    write_table(pl.DataFrame({"a": [1]}), folder / "t.parquet")
    assert not dead_dir.exists() and not dead_file.exists()
    assert all(p.is_dir() for p in stay)
    # a snapshot write sweeps its folder too
    dead_snap = tmp_path / "snaps" / "demo" / f".tmp-@{host}~{gone.pid}~k4"
    dead_snap.mkdir(parents=True)
    _write(tmp_path / "snaps")
    assert not dead_snap.exists()


def test_a_snapshot_carries_a_dataset_card_that_datasets_loads_with_its_splits_and_classlabel(tmp_path):
    """datasets.load_dataset(folder) reads README.md's configs: train and eval, the label a ClassLabel."""
    import datasets

    snap = curate_steps("configs/banking77.yaml", ["allow_outside_paths=true", f"output.snapshots={tmp_path / 'snap'}",
                                                    f"output.cache={tmp_path / 'cache'}", "synthesis.enabled=false"])
    card = (snap / "README.md").read_text()
    assert card.startswith("---\n") and "config_name: default" in card and "class_label" in card
    ds = datasets.load_dataset(str(snap))
    assert set(ds) == {"train", "eval"}
    manifest = read_manifest(snap)
    assert ds["train"].num_rows == manifest["rows"]["train"] and ds["eval"].num_rows == manifest["rows"]["eval"]
    label = ds["train"].features["label"]
    assert isinstance(label, datasets.ClassLabel) and label.num_classes == 77
    assert ds["eval"].features["label"] == label
    first = pl.read_parquet(snap / "train.parquet").row(0, named=True)
    assert label.int2str(ds["train"][0]["label"]) == first["label"] and ds["train"][0]["input"] == first["input"]
    rejected = datasets.load_dataset(str(snap), "rejected")["rejected"]
    assert rejected.num_rows == manifest["rows"]["rejected"]


def test_the_dataset_card_escapes_labels_and_runs_no_template(tmp_path):
    """A label is user text: markdown stays text, and Jinja in it is not rendered."""
    rows = pl.DataFrame({"row_id": ["1", "2"], "input": ["a", "b"], "output": ["{{ 7 * 7 }}", "<img src=x onerror=alert(1)>"],
                         "label": ["{{ 7 * 7 }}", "<img src=x onerror=alert(1)>"], "synthetic": [False, False]})
    manifest = {"name": "t", "snapshot_id": "abc", "config": {"task": {"kind": "classification"}}, "config_hash": "h",
                "rows": {"train": 2, "eval": 0, "rejected": 0, "quarantine": 0}, "stages": [], "inputs": [],
                "class_distribution": {"train": {"{{ 7 * 7 }}": 1, "<img src=x onerror=alert(1)>": 1}, "eval": {}}}
    card = dataset_card(manifest, rows, rows.clear())
    body = card.split("\n---\n", 1)[1]
    assert "49" not in card and "<img" not in body and "&lt;img src=x onerror=alert(1)&gt;" in body


def test_every_command_resolves_a_snapshot_without_a_guess(tmp_path):
    """The training, diff and synthesis commands' lookup is the review's: no glob, no one-character prefix."""
    a = _write(tmp_path)
    b = _write(tmp_path, train_n=6)
    assert resolve_snapshot(f"demo@{a.name}", tmp_path) == a and resolve_snapshot(b.name[:4], tmp_path) == b
    for ref in ("", "**", "*", "[0-9a-f]*", b.name[:1], "nope"):
        with pytest.raises(SnapshotNotFound):
            resolve_snapshot(ref, tmp_path)
