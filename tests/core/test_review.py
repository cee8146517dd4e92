"""Review decisions: recorded atomically in the manifest, data files untouched, readable by a gate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.review import ReviewError, is_approved, record_review, review_status
from core.snapshot import DATA_FILES, file_sha256, read_manifest, verify_snapshot
from tests.conftest import ROOT
from tests.core.test_diff import make_pair


def test_approve_then_reject_keeps_history_and_data(tmp_path):
    _, b = make_pair(tmp_path)
    hashes = {f: file_sha256(b / f) for f in DATA_FILES}
    before = read_manifest(b)
    assert review_status(b) is None and not is_approved(b)

    first = record_review(b, "approve", by="alice", note="dedupe change checked", at="2026-01-01T00:00:00+00:00")
    assert review_status(b) == first == {
        "decision": "approved", "by": "alice", "note": "dedupe change checked", "at": "2026-01-01T00:00:00+00:00",
    }
    assert is_approved(b)
    second = record_review(b, "reject", by="bob", root=tmp_path)
    assert second["decision"] == "rejected" and second["by"] == "bob" and second["note"] is None
    assert second["history"] == [{"decision": "approved", "by": "alice", "note": "dedupe change checked", "at": "2026-01-01T00:00:00+00:00"}]
    assert not is_approved(b)

    after = read_manifest(b)
    assert {k: v for k, v in after.items() if k != "review"} == {k: v for k, v in before.items() if k != "review"}
    assert {f: file_sha256(b / f) for f in DATA_FILES} == hashes
    verify_snapshot(b)  # the manifest's file hashes still hold
    assert sorted(p.name for p in b.iterdir()) == sorted([*DATA_FILES, "manifest.json"])  # no temp files left


def test_review_by_id_and_dataset_name(tmp_path):
    a, b = make_pair(tmp_path)
    record_review(a.name, "approve", by="carol", root=tmp_path)
    assert review_status(a, root=tmp_path)["by"] == "carol"
    assert review_status("demo", root=tmp_path) is None  # the latest (B) is not reviewed


def test_bad_reviews_are_refused(tmp_path):
    _, b = make_pair(tmp_path)
    with pytest.raises(ReviewError, match="approve or reject"):
        record_review(b, "maybe", by="alice")
    with pytest.raises(ReviewError, match="--by"):
        record_review(b, "approve", by=" ")
    (b / "train.parquet").write_bytes(b"tampered")
    with pytest.raises(ReviewError, match="damaged"):
        record_review(b, "approve", by="alice")
    assert review_status(b) is None


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "curate", "review", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_review_cli(tmp_path):
    _, b = make_pair(tmp_path)
    shown = _cli("show", str(b))
    assert shown.returncode == 0 and json.loads(shown.stdout) is None
    done = _cli("approve", str(b), "--by", "dana", "--note", "looks right")
    assert done.returncode == 0, done.stderr
    status = json.loads(_cli("show", str(b)).stdout)
    assert (status["decision"], status["by"], status["note"]) == ("approved", "dana", "looks right")
    assert _cli("reject", b.name, "--by", "erin", "--root", str(tmp_path)).returncode == 0
    assert read_manifest(b)["review"]["decision"] == "rejected"
    missing = _cli("approve", str(tmp_path / "nope"), "--by", "x", "--root", str(tmp_path))
    assert missing.returncode == 2 and "no snapshot" in missing.stderr
