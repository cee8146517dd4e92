"""Dataset diffs: every added and removed row has its cause, per-class numbers match the
manifests, markdown is deterministic and bounded, gates exit 3 with every reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from core.diff import check_gates, compute_diff, config_changes, diff_report, parse_gates
from core.diff_render import diff_markdown, render_markdown
from core.schema import DROP_SCHEMA, QUARANTINE_SCHEMA, ROW_SCHEMA, StageCounts
from core.snapshot import read_manifest, write_snapshot
from tests.conftest import ROOT, curate_steps


def rows(spec: list[tuple], split: str = "train", **extra_cols) -> pl.DataFrame:
    """Rows from (row_id, input, label[, line[, synthetic]]) tuples."""
    data = {c: [] for c in ROW_SCHEMA}
    for i, item in enumerate(spec):
        rid, text, label = item[:3]
        data["row_id"].append(rid)
        data["split"].append(split)
        data["source"].append("raw.jsonl")
        data["line"].append(item[3] if len(item) > 3 else i + 1)
        data["input"].append(text)
        data["output"].append(label)
        data["label"].append(label)
        data["pii"].append([])
        data["synthetic"].append(item[4] if len(item) > 4 else False)
    df = pl.DataFrame(data, schema=ROW_SCHEMA)
    return df.with_columns(**{k: pl.lit(v) for k, v in extra_cols.items()}) if extra_cols else df


def dropped(df: pl.DataFrame, stage: str, reason: str, duplicate_of=None, cluster=None) -> pl.DataFrame:
    return df.with_columns(
        stage=pl.lit(stage), reason=pl.lit(reason), detail=pl.lit(""),
        duplicate_of=pl.lit(duplicate_of, dtype=pl.String), cluster=pl.lit(cluster, dtype=pl.String),
    ).select(list({**ROW_SCHEMA, **DROP_SCHEMA}))


def snapshot(root, train, eval, rejected, quarantine=None, config=None, extra=None):
    quarantine = quarantine if quarantine is not None else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    n = train.height + eval.height + rejected.height
    stages = [
        StageCounts("ingest", n + quarantine.height, n, quarantined={"invalid_json": quarantine.height} if quarantine.height else {}).check(),
        StageCounts("dedupe", n, train.height + eval.height, filtered=dict(rejected.group_by("reason").len().iter_rows())).check(),
    ]
    return write_snapshot(
        root, "demo", train=train, eval=eval, rejected=rejected, quarantine=quarantine, stages=stages,
        config=config or {"clean": {"min_chars": 8}, "task": {"input_field": "text"}}, config_hash="c",
        inputs=[{"split": "train", "path": "raw.jsonl", "sha256": "aa", "bytes": 1}], extra=extra,
    )


def make_pair(root: Path) -> tuple[Path, Path]:
    """Two crafted snapshots where every kind of change happens once or more."""
    a_train = rows([
        ("r1", "how do i top up my card", "top_up"),
        ("r2", "How do I top up my card", "top_up"),
        ("r3", "card lost yesterday please", "lost_card"),
        ("r4", "my card was stolen today", "lost_card"),
        ("r5", "why was i charged twice", "charge"),
        ("r6", "refund has not arrived yet", "refund"),
        ("r7", "need a new pin code please", "pin", 7),
        ("r8", "exchange rate looks wrong", "charge"),
    ])
    a_eval = rows([("e1", "is my card lost", "lost_card")], "eval")
    a_rej = dropped(rows([("x1", "short but fine now", "pin")]), "clean", "too_short")
    a = snapshot(root, a_train, a_eval, a_rej, extra={"model": "m1", "templates": {"qa": {"hash": "h1"}}})

    b_train = rows([
        ("r2", "How do I top up my card", "top_up"),
        ("r4", "my card was stolen today!", "lost_card"),       # input changed
        ("r5", "why was i charged twice", "refund"),            # label changed
        ("r6", "refund has not arrived yet", "refund"),
        ("r8", "exchange rate looks wrong", "charge"),
        ("x1", "short but fine now", "pin"),                    # restored
        ("n1", "brand new message about pins", "pin"),          # new source row
        ("s1", "a synthetic top up question", "top_up", 99, True),  # generated
    ], provenance="gen-v1")  # an unknown extra column must be ignored
    b_eval = a_eval
    b_rej = pl.concat([
        dropped(rows([("r1", "how do i top up my card", "top_up")]), "dedupe", "near_duplicate", "r2", "c1"),
        dropped(rows([("r3", "card lost yesterday please", "lost_card")]), "clean", "too_short"),
        dropped(rows([("c1", "close my account", "close"), ("c2", "close my account", "refund")]), "dedupe", "label_conflict", None, "xc1"),
    ])
    quarantine = pl.DataFrame(
        [("train", "raw.jsonl", 7, "invalid_json", "bad", "{")], schema=QUARANTINE_SCHEMA, orient="row"
    )
    b = snapshot(root, b_train, b_eval, b_rej, quarantine, config={"clean": {"min_chars": 12}, "task": {"input_field": "text"}},
                 extra={"model": "m2", "templates": {"qa": {"hash": "h2"}}})
    return a, b


def test_every_added_and_removed_row_has_its_cause(tmp_path):
    a, b = make_pair(tmp_path)
    d = compute_diff(a, b, root=tmp_path)
    removed = {r["row_id"]: (r["cause"], r["stage"], r["reason"], r["duplicate_of"]) for r in d.removed.to_dicts()}
    assert removed == {
        "r1": ("rejected", "dedupe", "near_duplicate", "r2"),
        "r3": ("rejected", "clean", "too_short", None),
        "r7": ("quarantined", "ingest", "invalid_json", None),
    }
    assert d.removed.filter(pl.col("row_id") == "r1")["duplicate_input"].item() == "How do I top up my card"
    added = {r["row_id"]: (r["cause"], r["reason"]) for r in d.added.to_dicts()}
    assert added == {"x1": ("previously_rejected", "too_short"), "n1": ("new_row", None), "s1": ("synthetic", None)}
    changed = {r["row_id"]: r["fields"] for r in d.changed.to_dicts()}
    assert changed == {"r4": "input", "r5": "output,label"}
    assert d.label_changes == [{"label_a": "charge", "label_b": "refund", "rows": 1}]
    assert set(d.new_conflicts["row_id"]) == {"c1", "c2"}
    assert d.splits == [
        {"split": "eval", "a": 1, "b": 1, "added": 0, "removed": 0, "changed": 0, "label_changed": 0},
        {"split": "train", "a": 8, "b": 8, "added": 3, "removed": 3, "changed": 2, "label_changed": 1},
    ]
    # Rows per split add up: B = A - removed + added.
    for s in d.splits:
        assert s["b"] == s["a"] - s["removed"] + s["added"]


def test_a_row_absent_from_b_inputs_is_attributed(tmp_path):
    a, _ = make_pair(tmp_path)
    train = pl.read_parquet(a / "train.parquet").filter(pl.col("row_id") != "r8")
    rejected = pl.read_parquet(a / "rejected.parquet").with_columns(stage=pl.lit("dedupe"), reason=pl.lit("near_duplicate"))
    b = snapshot(tmp_path, train, pl.read_parquet(a / "eval.parquet"), rejected)
    d = compute_diff(a, b, root=tmp_path)
    assert d.removed.select("row_id", "cause", "stage", "reason").rows() == [("r8", "absent", "input", "not_in_inputs")]
    # x1 stays rejected, for another reason: listed, not counted as added or removed.
    assert d.rejection_changes == [
        {"stage_a": "clean", "reason_a": "too_short", "stage_b": "dedupe", "reason_b": "near_duplicate", "rows": 1}
    ]
    assert "| clean/too_short | dedupe/near_duplicate | 1 |" in render_markdown(d.to_dict())


def test_class_numbers_add_up_to_the_manifests(tmp_path):
    a, b = make_pair(tmp_path)
    d = compute_diff(a, b, root=tmp_path)
    for tag, folder in (("a", a), ("b", b)):
        dist = read_manifest(folder)["class_distribution"]
        assert {c["label"]: c[f"train_{tag}"] for c in d.classes if c[f"train_{tag}"]} == dist["train"]
        assert {c["label"]: c[f"eval_{tag}"] for c in d.classes if c[f"eval_{tag}"]} == dist["eval"]
        assert sum(c[f"share_{tag}"] for c in d.classes) == pytest.approx(100, abs=0.01)
    top_up = next(c for c in d.classes if c["label"] == "top_up")
    assert (top_up["train_a"], top_up["train_b"], top_up["synthetic_b"]) == (2, 2, 1)
    assert top_up["synthetic_share_b"] == 50.0
    # Per class: B = A - removed + added, apart from label changes (r5: charge -> refund).
    for c in d.classes:
        moved_in = sum(r["rows"] for r in d.label_changes if r["label_b"] == c["label"])
        moved_out = sum(r["rows"] for r in d.label_changes if r["label_a"] == c["label"])
        assert c["train_b"] == c["train_a"] - c["removed"] + c["added"] + moved_in - moved_out


def test_recipe_changes_are_listed(tmp_path):
    a, b = make_pair(tmp_path)
    d = compute_diff(a, b, root=tmp_path)
    assert d.changes["config"] == [{"key": "clean.min_chars", "old": 8, "new": 12}]
    assert d.changes["model"] == {"old": "m1", "new": "m2"}
    assert d.changes["templates"] == [{"name": "qa", "status": "changed", "old": "h1", "new": "h2"}]
    assert config_changes({"a": {"b": 1, "c": [1]}}, {"a": {"b": 2, "d": 3, "c": [1]}}) == [
        {"key": "a.b", "old": 1, "new": 2}, {"key": "a.d", "old": None, "new": 3},
    ]
    assert d.rejection_changes == []  # x1 was restored, not re-rejected
    funnel = {f["stage"]: f for f in d.funnel}
    assert funnel["dedupe"]["kept_a"] == 9 and funnel["dedupe"]["kept_b"] == 9


def test_defaults_b_latest_a_predecessor(tmp_path):
    a, b = make_pair(tmp_path)
    d = compute_diff(root=tmp_path)
    assert (d.a["id"], d.b["id"]) == (a.name, b.name)
    d1 = compute_diff(a.name, root=tmp_path)  # A given, B the latest
    assert d1.b["id"] == b.name
    assert "Nothing to compare" in diff_markdown(a, a=None, root=tmp_path)  # the first snapshot
    assert diff_markdown(b, root=tmp_path).startswith("## Dataset diff: demo")


def test_markdown_is_deterministic_bounded_and_most_important_first(tmp_path):
    a, b = make_pair(tmp_path)
    md1 = render_markdown(diff_report(a, b, root=tmp_path, fail_on=["conflicts"]))
    md2 = render_markdown(diff_report(a, b, root=tmp_path, fail_on=["conflicts"]))
    assert md1 == md2
    assert md1.index("gate(s) failed") < md1.index("### Rows per split") < md1.index("### New label conflicts")
    assert md1.index("### Removed rows by cause") < md1.index("### Class mix") < md1.index("### Sample removed rows")
    assert "`clean.min_chars`: 8 → 12" in md1
    assert "r2: How do I top up my card" in md1  # what the near-duplicate was folded into
    short = render_markdown(diff_report(a, b, root=tmp_path), max_chars=1500)
    assert len(short) <= 1500
    assert "Left out for length" in short or "left out (length limit)" in short


def test_gates(tmp_path):
    a, b = make_pair(tmp_path)
    d = compute_diff(a, b, root=tmp_path)
    reasons = check_gates(d, parse_gates(["share=2", "removed=10,conflicts", "label_changes=0"]))
    assert any(r.startswith("share: class 'lost_card'") for r in reasons)
    assert "removed: 37.50% of A's train rows removed, limit 10%" in reasons
    assert any(r.startswith("conflicts: 2 new label-conflict rows in 1 groups") for r in reasons)
    assert any(r.startswith("label_changes: 1 rows") for r in reasons)
    assert check_gates(d, parse_gates(["share=50", "removed=40", "conflicts=5"])) == []
    with pytest.raises(ValueError, match="unknown gate"):
        parse_gates(["shares=2", "removed=x"])


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "curate", "diff", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_outputs_and_exit_codes(tmp_path):
    a, b = make_pair(tmp_path)
    out = tmp_path / "out"
    ok = _cli(str(a), str(b), "--out-md", str(out / "d.md"), "--out-json", str(out / "d.json"),
              "--out-html", str(out / "d.html"), "--fail-on", "share=60")
    assert ok.returncode == 0, ok.stderr
    report = json.loads((out / "d.json").read_text())
    assert report["totals"]["removed"] == 3 and report["gates"] == []
    assert {r["row_id"] for r in report["rows"]["removed"]} == {"r1", "r3", "r7"}
    assert (out / "d.md").read_text().startswith("## Dataset diff")
    assert "<svg" in (out / "d.html").read_text()

    blocked = _cli(str(a), str(b), "--root", str(tmp_path), "--fail-on", "share=2", "--fail-on", "conflicts", "--format", "json")
    assert blocked.returncode == 3
    assert "share: class" in blocked.stderr and "conflicts: 2 new" in blocked.stderr
    assert json.loads(blocked.stdout)["gates"]  # the report still printed

    bad = _cli(str(a), str(b), "--fail-on", "bogus=1")
    assert bad.returncode == 2 and "unknown gate" in bad.stderr
    default = _cli("--root", str(tmp_path))  # B latest, A its predecessor, markdown to stdout
    assert default.returncode == 0 and f"`{a.name}` → `{b.name}`" in default.stdout


# ------------------------------------------------------------ real snapshots from the pipeline steps


def _run(tmp: Path, *overrides: str) -> Path:
    config = "configs/banking77.yaml"
    # Balancing off: these runs isolate one clean / dedupe setting each (class caps would
    # otherwise move with every change of the class counts).
    ov = ["allow_outside_paths=true", f"output.snapshots={tmp / 'snapshots'}", f"output.runs={tmp / 'runs'}", f"output.cache={tmp / 'cache'}", "balance.enabled=false", *overrides]
    return curate_steps(config, ov)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        base = _run(tmp)
        longer = _run(tmp, "clean.min_chars=20")
        casefold = _run(tmp, "dedupe.exact.casefold=true")
    finally:
        os.chdir(cwd)
    return tmp / "snapshots", base, longer, casefold


def _check_against_manifests(d, a: Path, b: Path):
    ma, mb = read_manifest(a), read_manifest(b)
    assert {c["label"]: c["train_a"] for c in d.classes if c["train_a"]} == ma["class_distribution"]["train"]
    assert {c["label"]: c["train_b"] for c in d.classes if c["train_b"]} == mb["class_distribution"]["train"]
    for s in d.splits:
        assert s["a"] == ma["rows"][s["split"]] and s["b"] == mb["rows"][s["split"]]
        assert s["b"] == s["a"] - s["removed"] + s["added"]
    assert d.removed["reason"].null_count() == 0 and d.added["cause"].null_count() == 0


def test_real_runs_min_chars(real):
    root, base, longer, _ = real
    d = compute_diff(base, longer, root=root)
    _check_against_manifests(d, base, longer)
    # Raising min_chars only removes rows, each as too_short by clean (in both splits).
    assert d.added.height == 0 and d.changed.height == 0 and d.removed.height > 0
    assert set(zip(d.removed["stage"], d.removed["reason"])) == {("clean", "too_short")}
    assert d.removed["input"].str.len_chars().max() < 20
    assert d.changes["config"] == [{"key": "clean.min_chars", "old": 8, "new": 20}]
    # The reverse diff restores them, each with A's reason.
    back = compute_diff(longer, base, root=root)
    assert back.added.height == d.removed.height
    assert set(back.added["cause"]) == {"previously_rejected"} and set(back.added["reason"]) == {"too_short"}


def test_real_runs_casefold(real):
    root, base, _, casefold = real
    d = compute_diff(base, casefold, root=root)
    _check_against_manifests(d, base, casefold)
    assert d.changes["config"] == [{"key": "dedupe.exact.casefold", "old": False, "new": True}]
    assert set(d.removed["reason"]) <= {"exact_duplicate", "near_duplicate", "eval_contamination", "label_conflict"}
    # Case variants become exact duplicates: newly removed, or already removed (e.g. as near
    # duplicates, when that stage runs) and now rejected for that reason instead.
    now_exact = d.removed.filter(pl.col("reason") == "exact_duplicate").height + sum(
        r["rows"] for r in d.rejection_changes if r["reason_b"] == "exact_duplicate"
    )
    assert now_exact > 0
    dups = d.removed.filter(pl.col("reason") == "exact_duplicate")
    # Folded into a row whose text equals it case-insensitively.
    assert dups["duplicate_input"].null_count() == 0
    assert (dups["duplicate_input"].str.to_lowercase() == dups["input"].str.to_lowercase()).all()


def test_raw_file_against_snapshot(real):
    root, base, _, _ = real
    d = compute_diff("data/banking77/raw/messages.jsonl", base, root=root)
    assert d.a["kind"] == "raw"
    source = pl.read_parquet(base / "train.parquet").filter(pl.col("source") == "data/banking77/raw/messages.jsonl")
    assert d.b["rows"]["train"] == source.height  # B restricted to that file's rows
    # Every raw row that B does not keep was filtered by a named stage (none is unexplained).
    assert d.removed.height > 0 and set(d.removed["cause"]) == {"rejected"}
    assert d.added.height == 0
    assert d.changed.height > 0  # normalization and PII redaction rewrote text, same row id
    assert set(d.changed["fields"]) == {"input"}
