"""The eval rows whose prediction changed between two adapters, per class, beside what changed in their training data.

    report = eval_diff("data/runs/adapters/banking77/A/adapter", "data/runs/adapters/banking77/B/adapter")
    curate eval-diff ADAPTER_A ADAPTER_B --out reports/flips     # eval_diff.md, eval_diff.html, eval_diff.json

Each adapter's latest evaluation (trainers.export.find_evaluation: its report.json and
predictions.jsonl) gives, for every eval row, the gold answer and what each system
answered. The rows both evaluations scored (by row id, with the same gold answer) are
compared for one system (default `tuned`): a row is a **flip** when it was right in A and
wrong in B (`right->wrong`) or the other way (`wrong->right`), and **changed** when both
were wrong with different answers. Per class: its recall in A and B and its flips. When
the two adapters were trained on different snapshots, each class also gets what the dataset
diff (core.diff) says changed in its training rows: rows added (synthetic ones counted),
rows removed, with their cause, so that "this class gained 15 synthetic rows and its recall
rose 0.40 -> 0.70; these 3 rows flipped to wrong" is one line of the report.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path

from core.diff import DiffError, compute_diff
from core.io import write_json, write_text
from core.markdown import md_code, md_text
from trainers.export import find_evaluation
from trainers.model_card import META_FILE

EXAMPLES = 3  # training rows shown per class and direction


class EvalDiffError(ValueError):
    """An adapter has no evaluation to compare, or the two share no eval row."""


def _evaluation(adapter: Path) -> tuple[dict, dict[str, dict]]:
    report = find_evaluation(adapter)
    if report is None:
        raise EvalDiffError(f"{adapter}: no evaluation of this adapter found (its report.json); run "
                            f"`curate eval --adapter {adapter}` first")
    rows = {}
    for line in Path(report["files"]["predictions"]).read_text().splitlines():
        rec = json.loads(line)
        rows[rec["row_id"]] = rec
    return report, rows


def _meta(adapter: Path) -> dict:
    path = adapter / META_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _train_changes(snapshot_a: str | None, snapshot_b: str | None) -> tuple[dict[str, dict], str | None]:
    """Per class, what the dataset diff of the two training snapshots says changed in its train rows; and why
    there is no such diff, when there is none."""
    if not snapshot_a or not snapshot_b:
        return {}, "an adapter's training snapshot is not recorded (no train_meta.json)"
    if Path(snapshot_a).resolve() == Path(snapshot_b).resolve():
        return {}, "both adapters were trained on the same snapshot"
    try:
        d = compute_diff(snapshot_a, snapshot_b)
    except (DiffError, OSError) as exc:  # a snapshot removed since: the flips still stand
        return {}, f"the training snapshots could not be compared: {exc}"
    out: dict[str, dict] = {c["label"]: {"train_a": c["train_a"], "train_b": c["train_b"], "added": c["added"],
                                         "removed": c["removed"], "synthetic_a": c["synthetic_a"],
                                         "synthetic_b": c["synthetic_b"], "added_rows": [], "removed_rows": []}
                            for c in d.classes}
    for frame, key in ((d.added, "added_rows"), (d.removed, "removed_rows")):
        for r in frame.filter(frame["split"] == "train").to_dicts():
            entry = out.get(r["label"])
            if entry is not None and len(entry[key]) < EXAMPLES:
                entry[key].append({"row_id": r["row_id"], "input": r["input"], "cause": r.get("cause"),
                                   "synthetic": bool(r.get("synthetic", False))})
    return out, None


def eval_diff(adapter_a: str | Path, adapter_b: str | Path, *, system: str = "tuned") -> dict:
    """Compare two adapters' evaluations row by row for `system`; the JSON-able report."""
    adapter_a, adapter_b = Path(adapter_a).resolve(), Path(adapter_b).resolve()
    (report_a, rows_a), (report_b, rows_b) = _evaluation(adapter_a), _evaluation(adapter_b)
    for side, report in (("A", report_a), ("B", report_b)):
        if system not in report["systems"]:
            raise EvalDiffError(f"adapter {side}'s evaluation has no system {system!r} (it has: "
                                f"{', '.join(report['systems'])})")
    common = [rid for rid in rows_a if rid in rows_b and rows_a[rid]["gold"] == rows_b[rid]["gold"]]
    if not common:
        raise EvalDiffError("the two evaluations share no eval row (row id and gold answer): they were evaluated "
                            "on different eval splits")
    flips, per_class = [], defaultdict(lambda: {"rows": 0, "right_a": 0, "right_b": 0})
    for rid in common:
        gold, a, b = rows_a[rid]["gold"], rows_a[rid][system], rows_b[rid][system]
        # the row's class: its label where the predictions carry it (a generation task's dialogue act), else the answer
        label = rows_a[rid].get("label") or gold
        stats = per_class[label]
        stats["rows"] += 1
        stats["right_a"] += a == gold
        stats["right_b"] += b == gold
        if a != b:
            kind = "right->wrong" if a == gold else "wrong->right" if b == gold else "changed"
            flips.append({"row_id": rid, "label": label, "gold": gold, "kind": kind, "a": a, "b": b})
    meta_a, meta_b = _meta(adapter_a), _meta(adapter_b)
    changes, no_diff = _train_changes(meta_a.get("snapshot"), meta_b.get("snapshot"))
    classes = []
    for label, s in per_class.items():
        mine = [f for f in flips if f["label"] == label]
        classes.append({
            "label": label, "eval_rows": s["rows"],
            "recall_a": round(s["right_a"] / s["rows"], 3), "recall_b": round(s["right_b"] / s["rows"], 3),
            "right_to_wrong": sum(f["kind"] == "right->wrong" for f in mine),
            "wrong_to_right": sum(f["kind"] == "wrong->right" for f in mine),
            "changed": sum(f["kind"] == "changed" for f in mine),
            "train": changes.get(label),
        })
    classes.sort(key=lambda c: (-(c["right_to_wrong"] + c["wrong_to_right"]), c["label"]))
    count = lambda kind: sum(f["kind"] == kind for f in flips)  # noqa: E731
    return {
        "system": system,
        "a": {"adapter": str(adapter_a), "snapshot": meta_a.get("snapshot"), "snapshot_id": meta_a.get("snapshot_id"),
              "accuracy": report_a["systems"][system].get("accuracy")},
        "b": {"adapter": str(adapter_b), "snapshot": meta_b.get("snapshot"), "snapshot_id": meta_b.get("snapshot_id"),
              "accuracy": report_b["systems"][system].get("accuracy")},
        "rows_compared": len(common),
        "rows_only_a": len(rows_a) - len(common), "rows_only_b": sum(rid not in rows_a for rid in rows_b),
        "totals": {"right->wrong": count("right->wrong"), "wrong->right": count("wrong->right"),
                   "changed": count("changed")},
        "train_diff": no_diff or "per class below",  # why no class carries its training rows' change, if none does
        "classes": classes,
        "flips": flips,
    }


def _class_line(c: dict) -> str:
    """One sentence per class: its training rows' change, its recall's, its flips."""
    t = c["train"]
    data = ""
    if t is not None:
        synth = t["synthetic_b"] - t["synthetic_a"]
        data = (f"train rows {t['train_a']} -> {t['train_b']} (+{t['added']} / -{t['removed']}"
                + (f", synthetic {synth:+d}" if synth else "") + "); ")
    return (f"{data}recall {c['recall_a']:.2f} -> {c['recall_b']:.2f}; {c['wrong_to_right']} rows flipped to right, "
            f"{c['right_to_wrong']} to wrong")


def render_markdown(report: dict) -> str:
    a, b, t = report["a"], report["b"], report["totals"]
    lines = [
        f"# Eval flips: {md_text(report['system'])}, adapter A against B",
        "",
        f"- A: {md_code(a['adapter'])} (snapshot {md_text(a['snapshot_id'])}, accuracy {a['accuracy']})",
        f"- B: {md_code(b['adapter'])} (snapshot {md_text(b['snapshot_id'])}, accuracy {b['accuracy']})",
        f"- {report['rows_compared']} eval rows compared: **{t['wrong->right']} wrong -> right**, "
        f"**{t['right->wrong']} right -> wrong**, {t['changed']} wrong in both with another answer"
        + ("" if report["train_diff"] == "per class below" else f"; {md_text(report['train_diff'])}"),
        "",
        "| class | eval rows | recall A | recall B | wrong -> right | right -> wrong | what changed |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in report["classes"]:
        if c["wrong_to_right"] or c["right_to_wrong"] or c["changed"] or (c["train"] and (c["train"]["added"] or c["train"]["removed"])):
            lines.append(f"| {md_text(c['label'])} | {c['eval_rows']} | {c['recall_a']:.2f} | {c['recall_b']:.2f} | "
                         f"{c['wrong_to_right']} | {c['right_to_wrong']} | {_class_line(c)} |")  # numbers and our words only
    for kind in ("right->wrong", "wrong->right"):
        rows = [f for f in report["flips"] if f["kind"] == kind]
        if rows:
            lines += ["", f"## {kind.replace('->', ' -> ')} ({len(rows)})", "", "| row | class | A answered | B answered |",
                      "|---|---|---|---|"]
            lines += [f"| {md_text(f['row_id'])} | {md_text(f['label'])} | {md_text(f['a'], 80)} | {md_text(f['b'], 80)} |"
                      for f in rows]
    trained = [c for c in report["classes"] if c["train"] and (c["train"]["added_rows"] or c["train"]["removed_rows"])
               and (c["wrong_to_right"] or c["right_to_wrong"])]
    if trained:
        lines += ["", "## Training rows of the classes that flipped (A's snapshot -> B's)", ""]
        for c in trained:
            lines.append(f"- **{md_text(c['label'])}**: {_class_line(c)}")
            for key, sign in (("added_rows", "+"), ("removed_rows", "-")):
                for r in c["train"][key]:
                    synthetic = ", synthetic" if r["synthetic"] and r["cause"] != "synthetic" else ""
                    lines.append(f"  - {sign} {md_text(r['input'], 100)} ({md_text(r['cause'])}{synthetic})")
    return "\n".join(lines) + "\n"


def render_html(report: dict) -> str:
    """The same report as a standalone page; every value escaped."""
    e = lambda v: html.escape("" if v is None else str(v))  # noqa: E731
    a, b, t = report["a"], report["b"], report["totals"]
    rows = "".join(
        f"<tr><td>{e(c['label'])}</td><td>{c['eval_rows']}</td><td>{c['recall_a']:.2f}</td><td>{c['recall_b']:.2f}</td>"
        f"<td>{c['wrong_to_right']}</td><td>{c['right_to_wrong']}</td><td>{e(_class_line(c))}</td></tr>"
        for c in report["classes"])
    css = {"right->wrong": "to-wrong", "wrong->right": "to-right", "changed": "changed"}
    flips = "".join(f"<tr class='{css[f['kind']]}'><td>{e(f['row_id'])}</td><td>{e(f['label'])}</td><td>{e(f['kind'])}</td>"
                    f"<td>{e(f['a'])}</td><td>{e(f['b'])}</td></tr>" for f in report["flips"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Eval flips</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25em .5em}}tr.to-wrong td{{background:#fde}}tr.to-right td{{background:#dfd}}</style>
</head><body>
<h1>Eval flips: {e(report['system'])}</h1>
<p>A: <code>{e(a['adapter'])}</code> (accuracy {e(a['accuracy'])})<br>B: <code>{e(b['adapter'])}</code> (accuracy {e(b['accuracy'])})</p>
<p>{report['rows_compared']} eval rows compared: {t['wrong->right']} wrong &rarr; right, {t['right->wrong']} right &rarr; wrong,
{t['changed']} wrong in both with another answer.</p>
<h2>Per class</h2>
<table><tr><th>class</th><th>eval rows</th><th>recall A</th><th>recall B</th><th>wrong &rarr; right</th>
<th>right &rarr; wrong</th><th>what changed</th></tr>{rows}</table>
<h2>Rows whose answer changed</h2>
<table><tr><th>row</th><th>class</th><th>flip</th><th>A answered</th><th>B answered</th></tr>{flips}</table>
</body></html>
"""


def write_eval_diff(report: dict, out_dir: str | Path) -> dict[str, str]:
    """eval_diff.json, eval_diff.md and eval_diff.html in `out_dir` (each written atomically)."""
    out = Path(out_dir)
    return {"json": str(write_json(report, out / "eval_diff.json")),
            "markdown": str(write_text(render_markdown(report), out / "eval_diff.md")),
            "html": str(write_text(render_html(report), out / "eval_diff.html"))}
