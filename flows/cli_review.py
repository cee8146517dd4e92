"""The `curate diff` and `curate review` commands (registered on the main app by flows/cli.py).

    curate diff                                   # latest snapshot vs its predecessor
    curate diff A B --format md                   # A, B: snapshot folder, id, or dataset name (latest)
    curate diff data/banking77/raw/messages.jsonl banking77     # a raw file as "before"
    curate diff A B --out-md diff.md --out-html diff.html --out-json diff.json
    curate diff A B --fail-on share=2 --fail-on removed=10 --fail-on conflicts   # exit 3 if any fails
    curate review approve|reject SNAPSHOT --by NAME [--note TEXT]   # SNAPSHOT names one snapshot, no guess (core/review.py)
    curate review show SNAPSHOT

Exit codes: 0 done (gates passed), 2 bad arguments or nothing to compare, 3 a gate failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from core.diff import DiffError, diff_report
from core.diff_render import render_html, render_markdown
from core.io import write_json, write_text
from core.review import ReviewError, find_snapshot, record_review, review_status
from core.snapshot import read_manifest
from flows.cli_common import err, fail

GATE_EXIT = 3


def diff(
    a: Optional[str] = typer.Argument(None, help="Before: snapshot folder, id, dataset name, or a raw JSONL/CSV/Parquet file (default: B's predecessor)."),
    b: Optional[str] = typer.Argument(None, help="After: snapshot folder, id or dataset name (default: the latest snapshot)."),
    root: Path = typer.Option(Path("data/snapshots"), help="Snapshot root folder."),
    name: Optional[str] = typer.Option(None, help="Dataset whose latest snapshot is B when B is not given."),
    fmt: list[str] = typer.Option([], "--format", "-f", help="Print md, html or json to stdout (default md when no --out-* is given)."),
    out_md: Optional[Path] = typer.Option(None, "--out-md", help="Write the markdown (PR comment) here."),
    out_html: Optional[Path] = typer.Option(None, "--out-html", help="Write the self-contained HTML report here."),
    out_json: Optional[Path] = typer.Option(None, "--out-json", help="Write the JSON report here."),
    fail_on: list[str] = typer.Option([], "--fail-on", help="Gate: share=N (points), removed=N / added=N / changed=N (% of A's train rows), label_changes=N, conflicts[=N]. Repeatable."),
    max_rows: int = typer.Option(5000, help="Rows of each kind listed in the HTML and JSON (0: all)."),
    max_chars: int = typer.Option(60_000, help="Length limit of the markdown."),
    raw_split: Optional[str] = typer.Option(None, help="Split of a raw file A when B's inputs do not name it (default train)."),
    chart: str = typer.Option("svg", help="Class-mix chart in the HTML: svg (inline) or png (matplotlib, base64)."),
) -> None:
    """What changed between two dataset versions, why, and per class; gate it with --fail-on."""
    bad = [f for f in fmt if f not in ("md", "html", "json")]
    if bad:
        fail(f"--format {bad[0]!r}: use md, html or json")
    if chart not in ("svg", "png"):
        fail(f"--chart {chart!r}: use svg or png")
    try:
        report = diff_report(a, b, root=root, name=name, fail_on=fail_on, max_rows=max_rows or None, raw_split=raw_split)
    except (DiffError, ValueError) as exc:
        fail(str(exc))
    if not fmt and not (out_md or out_html or out_json):
        fmt = ["md"]
    rendered: dict[str, str] = {}

    def text(kind: str) -> str:
        if kind not in rendered:
            if kind == "md":
                rendered[kind] = render_markdown(report, max_chars=max_chars)
            elif kind == "html":
                rendered[kind] = render_html(report, chart=chart)
            else:
                rendered[kind] = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
        return rendered[kind]

    if out_md:
        write_text(text("md"), out_md)
    if out_html:
        write_text(text("html"), out_html)
    if out_json:
        write_json(report, out_json)
    for kind in fmt:
        sys.stdout.write(text(kind))
    sys.stdout.flush()
    for path in (out_md, out_html, out_json):
        if path:
            err.print(f"wrote {path}", highlight=False, markup=False, soft_wrap=True)
    if report["gates"]:
        err.print(f"[bold red]blocked:[/] {len(report['gates'])} gate(s) failed", highlight=False)
        for reason in report["gates"]:
            err.print(f"  - {reason}", highlight=False, markup=False)  # reasons quote labels: [bold] is text
        raise typer.Exit(GATE_EXIT)


review_app = typer.Typer(help="Record and show review decisions on dataset snapshots.", no_args_is_help=True)


SNAPSHOT_REF = "Snapshot folder, dataset name (its latest), name@id, a full id, or an id prefix only one snapshot has (4+ characters)."


def _decide(decision: str, snapshot: str, by: str, note: Optional[str], root: Path) -> None:
    """Record the decision on the one snapshot `snapshot` names, and say which one (dataset/id)."""
    try:
        folder = find_snapshot(snapshot, root)
        review = record_review(folder, decision, by=by, note=note, root=root)
    except ReviewError as exc:
        fail(str(exc))
    manifest = read_manifest(folder)
    typer.echo(f"{review['decision']} {manifest['name']}/{manifest['snapshot_id']} by {review['by']} at {review['at']} ({folder})")


@review_app.command("approve")
def review_approve(
    snapshot: str = typer.Argument(..., help=SNAPSHOT_REF),
    by: str = typer.Option(..., "--by", help="Who decides."),
    note: Optional[str] = typer.Option(None, "--note", help="Why."),
    root: Path = typer.Option(Path("data/snapshots"), help="Snapshot root folder."),
) -> None:
    """Approve a snapshot (recorded in its manifest)."""
    _decide("approve", snapshot, by, note, root)


@review_app.command("reject")
def review_reject(
    snapshot: str = typer.Argument(..., help=SNAPSHOT_REF),
    by: str = typer.Option(..., "--by", help="Who decides."),
    note: Optional[str] = typer.Option(None, "--note", help="Why."),
    root: Path = typer.Option(Path("data/snapshots"), help="Snapshot root folder."),
) -> None:
    """Reject a snapshot (recorded in its manifest)."""
    _decide("reject", snapshot, by, note, root)


@review_app.command("show")
def review_show(
    snapshot: str = typer.Argument(..., help=SNAPSHOT_REF),
    root: Path = typer.Option(Path("data/snapshots"), help="Snapshot root folder."),
) -> None:
    """Print a snapshot's review decision as JSON (null when never reviewed)."""
    try:
        status = review_status(snapshot, root=root)
    except ReviewError as exc:
        fail(str(exc))
    typer.echo(json.dumps(status, indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    """Add `diff` and the `review` sub-commands to the main CLI."""
    app.command("diff")(diff)
    app.add_typer(review_app, name="review")
