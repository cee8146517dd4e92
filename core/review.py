"""Review decisions on dataset snapshots: who approved (or rejected) which version, and why.

    curate review approve data/snapshots/banking77/655b0e85425b --by alice --note "dedupe change checked"
    curate review reject banking77 --by bob --note "class share moved 4 points"
    curate review show banking77

The decision is written into the snapshot's `manifest.json` under "review" as
{decision, by, note, at}; an earlier decision is kept in "history" (oldest first), so
a re-review never loses who said what. The manifest is the only file of a snapshot
that may change: its `files` hashes cover the data files only, which are verified
before a decision is recorded (a damaged snapshot cannot be approved). The write is
atomic (core.io.write_json). `review_status` is what a review gate (the Prefect
flow) reads before training on a snapshot.

A decision is recorded on the snapshot the reference names without a guess
(core.snapshot.resolve_snapshot, the lookup of every command): a folder, a dataset name
(its latest), `name@id`, a full id, or a prefix of at least MIN_PREFIX characters that
only one snapshot's id starts with. An empty, too short or ambiguous reference is an
error that lists the candidates; names are compared as text, never as glob patterns.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from core.io import write_json
from core.snapshot import SnapshotNotFound, read_manifest, resolve_snapshot, verify_snapshot

DECISIONS = {"approve": "approved", "reject": "rejected", "approved": "approved", "rejected": "rejected"}


class ReviewError(ValueError):
    """A decision that cannot be recorded (unknown decision, no reviewer, damaged snapshot)."""


def find_snapshot(ref: str | Path, root: str | Path = "data/snapshots") -> Path:
    """The one snapshot folder `ref` names (core.snapshot.resolve_snapshot); anything else is a ReviewError."""
    try:
        return resolve_snapshot(ref, root)
    except SnapshotNotFound as exc:
        raise ReviewError(str(exc)) from None


def _folder(snapshot: str | Path, root: str | Path) -> Path:
    return find_snapshot(snapshot, root)


def record_review(
    snapshot: str | Path,
    decision: str,
    *,
    by: str,
    note: str | None = None,
    at: str | None = None,
    root: str | Path = "data/snapshots",
) -> dict:
    """Record `decision` ("approve"/"reject") by `by` in the snapshot's manifest; return the review."""
    if decision not in DECISIONS:
        raise ReviewError(f"decision {decision!r}: use approve or reject")
    if not by or not by.strip():
        raise ReviewError("a review needs the reviewer's name (--by)")
    folder = _folder(snapshot, root)
    try:
        verify_snapshot(folder)
    except (ValueError, OSError) as exc:
        raise ReviewError(f"cannot review a damaged snapshot: {exc}") from None
    manifest = read_manifest(folder)
    review = {
        "decision": DECISIONS[decision],
        "by": by.strip(),
        "note": note,
        "at": at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    previous = manifest.get("review")
    if previous:
        history = list(previous.get("history", []))
        history.append({k: previous.get(k) for k in ("decision", "by", "note", "at")})
        review["history"] = history
    manifest["review"] = review
    write_json(manifest, folder / "manifest.json")
    return review


def review_status(snapshot: str | Path, *, root: str | Path = "data/snapshots") -> dict | None:
    """The snapshot's latest review {decision, by, note, at[, history]}, or None if never reviewed."""
    return read_manifest(_folder(snapshot, root)).get("review")


def is_approved(snapshot: str | Path, *, root: str | Path = "data/snapshots") -> bool:
    status = review_status(snapshot, root=root)
    return bool(status) and status.get("decision") == "approved"
