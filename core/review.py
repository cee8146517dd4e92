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

A decision is recorded on the snapshot the reference names without a guess (find_snapshot):
a folder, a dataset name (its latest), `name@id`, a full id, or a prefix of at least
MIN_PREFIX characters that only one snapshot's id starts with. An empty, too short or
ambiguous reference is an error that lists the candidates; names are compared as text,
never as glob patterns (`*`, `**`, `[` match only themselves).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from core.io import write_json
from core.snapshot import list_snapshots, read_manifest, verify_snapshot

MIN_PREFIX = 4  # an id prefix shorter than this names a snapshot by chance (12 hex digits in an id)
SHOWN = 20  # candidates listed in an error

DECISIONS = {"approve": "approved", "reject": "rejected", "approved": "approved", "rejected": "rejected"}


class ReviewError(ValueError):
    """A decision that cannot be recorded (unknown decision, no reviewer, damaged snapshot)."""


def _snapshots(root: Path) -> list[tuple[str, str]]:
    """Every (dataset, id) under root that has a manifest, sorted (folders listed, not globbed)."""
    if not root.is_dir():
        return []
    out = []
    for dataset in sorted(p for p in root.iterdir() if p.is_dir()):
        out += [(dataset.name, f.name) for f in sorted(dataset.iterdir()) if (f / "manifest.json").is_file()]
    return out


def _listed(candidates: list[tuple[str, str]]) -> str:
    shown = [f"{d}/{i}" for d, i in candidates[:SHOWN]]
    more = f" and {len(candidates) - SHOWN} more" if len(candidates) > SHOWN else ""
    return ", ".join(shown) + more if shown else "none"


def find_snapshot(ref: str | Path, root: str | Path = "data/snapshots") -> Path:
    """The one snapshot folder `ref` names: a folder (holding manifest.json), a dataset name (its
    latest snapshot), `name@latest`, `name@ID`, a full id or an id prefix of at least MIN_PREFIX
    characters that matches one snapshot only. Anything else is a ReviewError listing candidates."""
    root = Path(root)
    text = str(ref).strip()
    if not text:
        raise ReviewError(f"an empty snapshot reference: give a snapshot folder, a dataset name or an id "
                          f"(snapshots under {root}: {_listed(_snapshots(root))})")
    if isinstance(ref, Path) or "/" in text or text in (".", ".."):
        if (Path(ref) / "manifest.json").is_file():
            return Path(ref)
        raise ReviewError(f"no snapshot folder {text!r}: it holds no manifest.json")
    if (Path(text) / "manifest.json").is_file():  # a snapshot folder in the working folder
        return Path(text)
    name, at, which = text.partition("@")
    every = _snapshots(root)
    datasets = {d for d, _ in every}
    if name in datasets:
        ids = list_snapshots(root, name) or [i for d, i in every if d == name]
        if which in ("", "latest"):
            return root / name / ids[-1]
        pool, prefix = [(d, i) for d, i in every if d == name], which
    elif at:
        raise ReviewError(f"no dataset {name!r} under {root} (datasets: {', '.join(sorted(datasets)) or 'none'})")
    else:
        pool, prefix = every, text
    exact = [(d, i) for d, i in pool if i == prefix]
    if len(exact) == 1:
        return root / exact[0][0] / exact[0][1]
    matches = exact or [(d, i) for d, i in pool if i.startswith(prefix)]
    if not matches:
        raise ReviewError(f"no snapshot {text!r} under {root}: not a dataset name, an id or the start of one "
                          f"(snapshots: {_listed(every)})")
    if len(prefix) < MIN_PREFIX and not exact:
        raise ReviewError(f"snapshot {text!r}: an id prefix needs at least {MIN_PREFIX} characters; "
                          f"it would match {_listed(matches)}")
    if len(matches) > 1:
        raise ReviewError(f"snapshot {text!r} is ambiguous: it matches {_listed(matches)}; give more of the id, "
                          "name@id or the folder")
    return root / matches[0][0] / matches[0][1]


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
