"""Rendering a dataset diff (core/diff.py's report dict): markdown for a PR comment, a self-contained HTML page.

    report = diff_report(a, b)                    # core/diff.py
    text = render_markdown(report)                # bounded, deterministic, most important first
    page = render_html(report, chart="svg")       # core/diff_report.html.jinja, autoescaped

Every value from the data (row text, labels, the reviewer, ids, file and template names,
config keys) is escaped in the markdown by core/markdown.py (md_text, md_code): rendered as
GitHub or the Prefect UI renders it, none is a tag, a link, an image or a table break, and
each reads as written; table cells are cut to CELL_CHARS. The HTML comes from a Jinja
template with autoescaping on, and the rows for the page's filter travel as JSON through
`tojson` with <, >, &, ' and U+2028/9 escaped: a row holding `<!--` or `</script>` is text.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from core.diff import DiffError, diff_report
from core.markdown import md_code, md_text

# Text in markdown and HTML cells is cut to this many characters: a PR comment shows
# the gist of a row; the JSON has the full text.
CELL_CHARS = 120
MD_MAX_CHARS = 60_000
MD_CLASSES = 30  # a PR comment lists the 30 largest class moves; the HTML and JSON list all
HTML_TEMPLATE = "diff_report.html.jinja"

# ---------------------------------------------------------------------------- markdown


# A gate line or a value outside a table is cut to this many characters (a label may be long).
LINE_CHARS = 500


def _cell(value, limit: int = CELL_CHARS) -> str:
    return md_text(value, limit)


def _table(header: list[str], rows: list[list], align: str | None = None) -> list[str]:
    align = align or "l" * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return lines


def _signed(n) -> str:
    return f"{n:+d}" if isinstance(n, int) else f"{n:+.2f}"


def _cause(r: dict) -> str:
    if r.get("cause") == "previously_rejected":
        return f"was {r['stage']}/{r['reason']} in A"
    if r.get("cause") in ("synthetic", "new_row"):
        return r["cause"]
    return f"{r['stage']}/{r['reason']}"


def _side_name(side: dict) -> str:
    return md_code(side["id"]) + (" (raw file)" if side["kind"] == "raw" else "")


def _sections(d: dict) -> list[tuple[str, list[str]]]:
    """Markdown sections, most important first: (title, lines)."""
    t, a, b = d["totals"], d["a"], d["b"]
    out: list[tuple[str, list[str]]] = []

    head = [f"## Dataset diff: {md_text(b.get('name') or '')} {_side_name(a)} → {_side_name(b)}", ""]
    if d["gates"]:
        head.append(f"**❌ blocked: {len(d['gates'])} gate(s) failed**")
        head += [f"- {md_text(g, LINE_CHARS)}" for g in d["gates"]]
    elif d.get("gates_checked"):
        head.append("**✅ every gate passed**")
    head += [
        "",
        f"**{t['added']} added, {t['removed']} removed, {t['changed']} changed** "
        f"({t['label_changed']} label changes); train: +{t['train_added_pct']:.2f}% / "
        f"-{t['train_removed_pct']:.2f}% of A; largest class-share move {t['max_share_move']:.2f} points; "
        f"{t['new_conflicts']} new label-conflict rows, {t['resolved_conflicts']} resolved.",
    ]
    review = b.get("review")
    if review:
        head.append(f"Review of B: **{md_text(review.get('decision'))}** by {md_text(review.get('by'), LINE_CHARS)} "
                    f"at {md_text(review.get('at'))}.")
    out.append(("", head))

    out.append(("Rows per split", _table(
        ["split", "A", "B", "Δ", "added", "removed", "changed", "label changed"],
        [[s["split"], s["a"], s["b"], _signed(s["b"] - s["a"]), s["added"], s["removed"], s["changed"], s["label_changed"]] for s in d["splits"]],
        "lrrrrrrr",
    )))

    if t["new_conflicts"]:
        rows = [[r["cluster"], r["split"], r["label"], r["input"], r["row_id"]] for r in d["samples"]["new_conflicts"]]
        out.append((f"New label conflicts ({t['new_conflicts']} rows, {t['new_conflict_groups']} groups)",
                    _table(["group", "split", "label", "input", "row id"], rows)))

    if d["removed_by_cause"]:
        out.append(("Removed rows by cause", _table(
            ["stage", "reason", "total", "train", "eval"],
            [[r["stage"], r["reason"], r["total"], r["train"], r["eval"]] for r in d["removed_by_cause"]],
            "llrrr",
        )))
    if d["added_by_cause"]:
        out.append(("Added rows by cause", _table(
            ["cause", "total", "train", "eval"],
            [[_cause(r), r["total"], r["train"], r["eval"]] for r in d["added_by_cause"]],
            "lrrr",
        )))
    if d["label_changes"]:
        lines = _table(["from", "to", "rows"], [[r["label_a"], r["label_b"], r["rows"]] for r in d["label_changes"][:MD_CLASSES]], "llr")
        if len(d["label_changes"]) > MD_CLASSES:
            lines += ["", f"_{len(d['label_changes']) - MD_CLASSES} more label pairs in the HTML/JSON report._"]
        out.append((f"Label changes ({t['label_changed']} rows, the commonest pairs first)", lines))

    if d["rejection_changes"]:
        out.append(("Rejected in both, for another reason", _table(
            ["A stage/reason", "B stage/reason", "rows"],
            [[f"{r['stage_a']}/{r['reason_a']}", f"{r['stage_b']}/{r['reason_b']}", r["rows"]] for r in d["rejection_changes"][:MD_CLASSES]],
            "llr",
        )))

    moved = [c for c in d["classes"] if c["share_delta"] or c["added"] or c["removed"] or c["synthetic_b"] != c["synthetic_a"]]
    syn = any(c["synthetic_b"] or c["synthetic_a"] for c in d["classes"])
    header = ["class", "A", "share A %", "B", "share B %", "Δ points", "added", "removed"] + (["synthetic B %"] if syn else [])
    rows = [
        [c["label"], c["train_a"], f"{c['share_a']:.2f}", c["train_b"], f"{c['share_b']:.2f}", f"{c['share_delta']:+.2f}", c["added"], c["removed"]]
        + ([f"{c['synthetic_share_b']:.1f}"] if syn else [])
        for c in moved[:MD_CLASSES]
    ]
    lines = _table(header, rows, "lrrrrrrr" + ("r" if syn else "")) if rows else ["No class changed."]
    if len(moved) > MD_CLASSES:
        lines += ["", f"_{len(moved) - MD_CLASSES} more classes with smaller moves in the HTML/JSON report._"]
    out.append((f"Class mix, train split ({len(moved)} of {len(d['classes'])} classes changed; largest moves first)", lines))

    ch = d["changes"]
    lines = []
    if ch.get("config"):
        lines += ["Config:", ""] + [f"- {md_code(c['key'])}: {_cell(json.dumps(c['old']))} → {_cell(json.dumps(c['new']))}" for c in ch["config"]] + [""]
    if ch.get("model"):
        lines += [f"Model: {md_code(ch['model']['old'])} → {md_code(ch['model']['new'])}", ""]
    if ch.get("templates"):
        lines += ["Templates:", ""] + [f"- {md_code(x['name'])} {_cell(x['status'])}: {_cell(x['old'])} → {_cell(x['new'])}"
                                       for x in ch["templates"]] + [""]
    if ch.get("inputs"):
        lines += ["Inputs:", ""] + [f"- {_cell(x['split'])} {md_code(x['path'])} {_cell(x['status'])}: {_cell(x['old'])} → {_cell(x['new'])}"
                                    for x in ch["inputs"]] + [""]
    if ch.get("code"):
        lines += ["Code:", ""] + [f"- {md_code(c['key'])}: {_cell(c['old'])} → {_cell(c['new'])}" for c in ch["code"]] + [""]
    if ch.get("other"):
        lines += ["Other manifest fields:", ""] + [f"- {md_code(c['key'])}: {_cell(json.dumps(c['old']))} → {_cell(json.dumps(c['new']))}"
                                                   for c in ch["other"]] + [""]
    if a["kind"] == "raw":
        lines = ["A is a raw input file: no configuration to compare."]
    out.append(("What changed in the recipe", lines or ["Config, model, templates, inputs and code are the same."]))

    if d["funnel"]:
        def n(v):
            return "" if v is None else v
        out.append(("Funnel, A vs B", _table(
            ["stage", "rows in A", "rows in B", "kept A", "kept B", "filtered A", "filtered B", "quarantined A", "quarantined B"],
            [[f["stage"], n(f["rows_in_a"]), n(f["rows_in_b"]), n(f["kept_a"]), n(f["kept_b"]), n(f["filtered_a"]),
              n(f["filtered_b"]), n(f["quarantined_a"]), n(f["quarantined_b"])] for f in d["funnel"]],
            "lrrrrrrrr",
        ) + [""] + _table(
            ["stage", "reason", "A", "B", "Δ"],
            [[r["stage"], r["reason"], r["a"], r["b"], _signed(r["delta"])] for r in d["reasons"] if r["delta"]],
            "llrrr",
        )))

    s = d["samples"]
    if s["removed"]:
        out.append(("Sample removed rows", _table(
            ["row id", "split", "label", "input", "why", "folded into"],
            [[r["row_id"], r["split"], r["label"], r["input"], _cause(r),
              f"{r['duplicate_of']}: {r['duplicate_input'] or ''}" if r["duplicate_of"] else ""] for r in s["removed"]],
        )))
    if s["added"]:
        out.append(("Sample added rows", _table(
            ["row id", "split", "label", "input", "why"],
            [[r["row_id"], r["split"], r["label"], r["input"], _cause(r)] for r in s["added"]],
        )))
    if s["label_changed"]:
        out.append(("Sample label changes", _table(
            ["row id", "split", "input (B)", "label A", "label B"],
            [[r["row_id"], r["split"], r["input_b"], r["label_a"], r["label_b"]] for r in s["label_changed"]],
        )))
    if s["changed"]:
        out.append(("Sample changed rows", _table(
            ["row id", "split", "fields", "A", "B"],
            [[r["row_id"], r["split"], r["fields"],
              r["input_a"] if "input" in r["fields"] else r["output_a"],
              r["input_b"] if "input" in r["fields"] else r["output_b"]] for r in s["changed"]],
        )))
    if d["quarantine"] and any(q["a"] != q["b"] for q in d["quarantine"]):
        out.append(("Quarantine by reason", _table(
            ["reason", "A", "B"], [[q["reason"], q["a"], q["b"]] for q in d["quarantine"]], "lrr"
        )))
    return out


def render_markdown(d: dict, *, max_chars: int = MD_MAX_CHARS) -> str:
    """Markdown for a pull-request comment: deterministic, at most `max_chars`, most important first.

    A section that does not fit is cut at a table row with a note saying how many
    lines were left out; later sections are then listed by title only.
    """
    footer = (
        f"\n<sub>A: {md_text(d['a']['ref'])} · B: {md_text(d['b']['ref'])} · rows matched by row_id · "
        f"samples are the smallest row ids · full tables in the HTML/JSON report</sub>\n"
    )
    budget = max_chars - len(footer) - 600  # room for the "left out" line
    parts: list[str] = []
    used = 0
    skipped: list[str] = []
    for title, lines in _sections(d):
        block = ([f"### {title}", ""] if title else []) + lines + [""]
        text = "\n".join(block) + "\n"
        if skipped:
            skipped.append(title)
            continue
        if used + len(text) <= budget:
            parts.append(text)
            used += len(text)
            continue
        kept, size = [], 0
        for line in block:
            if used + size + len(line) + 1 > budget - 100:
                break
            kept.append(line)
            size += len(line) + 1
        if len(kept) > 4:
            chunk = "\n".join(kept) + f"\n\n_… {len(block) - len(kept)} more lines of this section left out (length limit)._\n\n"
            parts.append(chunk)
            used += len(chunk)
            skipped.append("")
        else:
            skipped.append(title or "summary")
    if any(skipped):
        parts.append(f"_Left out for length: {', '.join(s for s in skipped if s)}._\n")
    out = "".join(parts) + footer
    if len(out) > max_chars:  # only with a very small limit
        out = out[: max(0, max_chars - 40)] + "\n\n_… cut at the length limit._\n"
    return out


# ---------------------------------------------------------------------------- HTML


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=select_autoescape(["html", "jinja"]),
                      undefined=StrictUndefined, keep_trailing_newline=True)
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "default": str}
    env.policies["json.dumps_function"] = _json_dumps
    return env


def _json_dumps(obj, **kwargs) -> str:
    """JSON for `tojson` in a <script> element: Jinja then escapes <, >, & and ' (so `<!--` and
    `</script>` in a row are text); U+2028/9 are escaped here too, as JavaScript older than
    ES2019 ends a string literal at them."""
    return json.dumps(obj, **kwargs).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _bars(classes: list[dict], *, limit: int = 40) -> tuple[list[dict], dict]:
    """Geometry of the SVG chart: each class's train share in A (grey) and B (blue), the largest moves first."""
    shown = classes[:limit]
    top = max((max(c["share_a"], c["share_b"]) for c in shown), default=0.0) or 1.0
    label_w, bar_w, row_h, pad = 300, 560, 22, 30
    svg = {"label_w": label_w, "width": label_w + bar_w + 140, "height": pad + row_h * len(shown) + 10,
           "note": f" (top {limit} of {len(classes)})" if len(classes) > limit else ""}
    bars = [
        {"name": str(c["label"] if c["label"] is not None else "(none)"), "y": pad + i * row_h,
         "wa": bar_w * c["share_a"] / top, "wb": bar_w * c["share_b"] / top, "share_a": c["share_a"],
         "share_b": c["share_b"], "delta": c["share_delta"], "color": "#c0392b" if c["share_delta"] < 0 else "#1e8449"}
        for i, c in enumerate(shown)
    ]
    return bars, svg


def _recipe(changes: dict) -> list[list]:
    rows = [["config", c["key"], json.dumps(c["old"]), json.dumps(c["new"])] for c in changes.get("config", [])]
    if changes.get("model"):
        rows.append(["model", "model", changes["model"]["old"], changes["model"]["new"]])
    rows += [["template", f"{x['name']} ({x['status']})", x["old"], x["new"]] for x in changes.get("templates", [])]
    rows += [["input", f"{x['split']} {x['path']} ({x['status']})", x["old"], x["new"]] for x in changes.get("inputs", [])]
    rows += [["code", c["key"], c["old"], c["new"]] for c in changes.get("code", [])]
    rows += [["manifest", c["key"], json.dumps(c["old"]), json.dumps(c["new"])] for c in changes.get("other", [])]
    return rows


def render_html(d: dict, *, chart: str = "svg") -> str:
    """A self-contained HTML report: inline CSS, JS and chart (SVG, or a matplotlib PNG), no network."""
    t, a, b = d["totals"], d["a"], d["b"]
    bars, svg = _bars(d["classes"])
    context = {
        "title": f"Dataset diff {b.get('name') or ''}: {a['id']} → {b['id']}",
        "a": a, "b": b, "gates": d["gates"], "gates_checked": d.get("gates_checked"), "review": b.get("review"),
        "cards": [("added", t["added"]), ("removed", t["removed"]), ("changed", t["changed"]),
                  ("label changes", t["label_changed"]), ("new conflicts", t["new_conflicts"]),
                  ("max share move", f"{t['max_share_move']:.2f} pts")],
        "bars": bars, "svg": svg, "png": _png_chart(d["classes"]) if chart == "png" else None,
        # each table as (header, rows)
        "splits": (["split", "A", "B", "added", "removed", "changed", "label changed"],
                   [[s["split"], s["a"], s["b"], s["added"], s["removed"], s["changed"], s["label_changed"]] for s in d["splits"]]),
        "classes": (["class", "A", "share A %", "B", "share B %", "Δ points", "added", "removed", "synthetic A %", "synthetic B %", "eval A", "eval B"],
                    [[c["label"], c["train_a"], f"{c['share_a']:.2f}", c["train_b"], f"{c['share_b']:.2f}", f"{c['share_delta']:+.2f}",
                      c["added"], c["removed"], f"{c['synthetic_share_a']:.1f}", f"{c['synthetic_share_b']:.1f}", c["eval_a"], c["eval_b"]]
                     for c in d["classes"]]),
        "removed": (["stage", "reason", "total", "train", "eval"],
                    [[r["stage"], r["reason"], r["total"], r["train"], r["eval"]] for r in d["removed_by_cause"]]),
        "added": (["cause", "total", "train", "eval"], [[_cause(r), r["total"], r["train"], r["eval"]] for r in d["added_by_cause"]]),
        "labels": (["from", "to", "rows"], [[r["label_a"], r["label_b"], r["rows"]] for r in d["label_changes"]]),
        "rejections": (["A stage/reason", "B stage/reason", "rows"],
                       [[f"{r['stage_a']}/{r['reason_a']}", f"{r['stage_b']}/{r['reason_b']}", r["rows"]] for r in d["rejection_changes"]]),
        "recipe": (["what", "key", "A", "B"], _recipe(d["changes"])),
        "funnel": (["stage", "rows in A", "rows in B", "kept A", "kept B", "filtered A", "filtered B", "quarantined A", "quarantined B"],
                   [[f["stage"], f["rows_in_a"], f["rows_in_b"], f["kept_a"], f["kept_b"], f["filtered_a"], f["filtered_b"],
                     f["quarantined_a"], f["quarantined_b"]] for f in d["funnel"]]),
        "reasons": (["stage", "reason", "A", "B", "Δ"], [[r["stage"], r["reason"], r["a"], r["b"], _signed(r["delta"])] for r in d["reasons"]]),
        "kinds": [(k, t[k]) for k in ("removed", "added", "changed", "new_conflicts")],
        "payload": {"rows": d["rows"], "rows_truncated": d["rows_truncated"]},
    }
    return _environment().get_template(HTML_TEMPLATE).render(context)


def _png_chart(classes: list[dict], *, limit: int = 40) -> str:
    """The class-mix chart as a base64 PNG from matplotlib (an alternative to the inline SVG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = classes[:limit][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(shown) + 1))
    y = range(len(shown))
    ax.barh([i + 0.2 for i in y], [c["share_a"] for c in shown], height=0.4, color="#9aa5b1", label="A")
    ax.barh([i - 0.2 for i in y], [c["share_b"] for c in shown], height=0.4, color="#2f6fde", label="B")
    ax.set_yticks(list(y), [str(c["label"]) for c in shown], fontsize=7)
    ax.set_xlabel("train share %")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------------------- for the flow


def diff_markdown(
    b: str | Path,
    a: str | Path | None = None,
    *,
    root: str | Path = "data/snapshots",
    fail_on: list[str] | None = None,
    max_chars: int = MD_MAX_CHARS,
) -> str:
    """Markdown of B against A (default: B's predecessor), for a Prefect artifact or a PR comment.

    A first snapshot (no predecessor) gives a one-line note instead of failing the flow.
    """
    try:
        report = diff_report(a, b, root=root, fail_on=fail_on)
    except DiffError as exc:
        return nothing_to_compare(exc)
    return render_markdown(report, max_chars=max_chars)


def nothing_to_compare(exc: Exception) -> str:
    """The markdown of a diff that has no A (a dataset's first snapshot); the reason escaped (it names paths)."""
    return f"## Dataset diff\n\nNothing to compare: {md_text(exc, LINE_CHARS)}.\n"

