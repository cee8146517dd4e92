"""Review decisions: recorded atomically in the manifest, data files untouched, readable by a gate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.review import ReviewError, find_snapshot, is_approved, record_review, review_status
from core.snapshot import DATA_FILES, MIN_PREFIX, file_sha256, read_manifest, verify_snapshot
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
    assert sorted(p.name for p in b.iterdir()) == sorted([*DATA_FILES, "manifest.json", "README.md"])  # no temp files left


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


def test_a_review_needs_an_unambiguous_snapshot(tmp_path):
    """An empty ref, a one-character prefix or a prefix two ids share names no snapshot: each is an
    error that lists the candidates, and nothing is recorded anywhere."""
    a, b = make_pair(tmp_path)
    other = tmp_path / "other" / (b.name[:3] + "ffffffffff")  # a second dataset, an id sharing B's first 3 characters
    other.mkdir(parents=True)
    (other / "manifest.json").write_text(json.dumps({**read_manifest(b), "name": "other", "snapshot_id": other.name}))
    for ref in ("", "  ", b.name[0], b.name[:3], "*", "**", "[a-f]*", "demo@" + b.name[:2], "nope@x", str(tmp_path / "demo")):
        with pytest.raises(ReviewError) as err:
            record_review(ref, "approve", by="mallory", root=tmp_path)
        message = str(err.value)
        assert "Traceback" not in message and message, ref
        if ref.strip() in ("", b.name[:3]):
            assert f"demo/{b.name}" in message and f"other/{other.name}" in message, message  # the candidates
    assert all(read_manifest(f)["review"] is None for f in (a, b, other))
    assert find_snapshot(b.name[:MIN_PREFIX], tmp_path) == b  # a prefix only one id starts with
    assert find_snapshot(b.name, tmp_path) == find_snapshot(f"demo@{b.name[:5]}", tmp_path) == b
    assert find_snapshot("demo", tmp_path) == find_snapshot("demo@latest", tmp_path) == b
    assert find_snapshot(str(a), tmp_path) == a


def test_review_cli_says_which_snapshot_it_decided_on(tmp_path):
    a, b = make_pair(tmp_path)
    empty = _cli("approve", "", "--by", "x", "--root", str(tmp_path))
    assert empty.returncode == 2 and "empty snapshot reference" in empty.stderr and a.name in empty.stderr
    assert "Traceback" not in empty.stderr and read_manifest(a)["review"] is None and read_manifest(b)["review"] is None
    done = _cli("approve", b.name[:6], "--by", "[bold]dana[/]", "--root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"approved demo/{b.name}" in done.stdout and "[bold]dana[/]" in done.stdout
    rejected = _cli("reject", "demo", "--by", "erin", "--root", str(tmp_path))
    assert rejected.returncode == 0 and f"rejected demo/{b.name}" in rejected.stdout
