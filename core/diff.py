"""Dataset diffs: what changed between two dataset versions, why, and per class.

    curate diff                         # latest snapshot of the only dataset vs its predecessor
    curate diff A B --out-md d.md --out-html d.html --out-json d.json --fail-on share=2

    from core.diff import compute_diff
    from core.diff_render import render_markdown
    d = compute_diff("data/snapshots/banking77/9a1ce6d3a809", "data/snapshots/banking77/655b0e85425b")
    print(render_markdown(d.to_dict()))

Rows are matched by their stable `row_id` (core.schema.row_ids: a hash of split, raw
input, raw output and occurrence, computed at ingest), so a row whose text a later
stage rewrote is *changed*, not removed and added. Per split:

- added:   kept in B, not kept in A. Cause: `previously_rejected` (A filtered it; its
           stage and reason are given), `synthetic` (a generated row), or `new_row`.
- removed: kept in A, not kept in B. Cause: the stage and reason from B's
           rejected table (with `duplicate_of`, the row it was folded into, for exact
           and near duplicates), or the quarantine reason when B quarantined the
           record at the same source and line, or `input/not_in_inputs`.
- changed: kept in both with a different input, output or label.
- rejected in both, but by another stage or for another reason (e.g. a case
  variant that was a near duplicate is now an exact one): counted per reason pair.

"Before" may also be a raw input file (JSONL, CSV or Parquet): it is read exactly as
ingest reads it, with B's configuration (field names, class set), so its row ids are
the ids ingest gives. When the file is byte-identical to one of B's inputs, B is
restricted to that source and rows are matched by (source, line), which is exact even
when the occurrence number differs because an earlier source held the same pair.

Everything is computed with polars joins and anti-joins over whole columns (no
Python loop over rows): two 1M-row snapshots diff in seconds (bench/bench_diff.py).
`check_gates` turns `--fail-on` thresholds into a list of failures for CI. The sides are
read by core/diff_sides.py; the result renders (core/diff_render.py) to markdown
(bounded, for a pull-request comment), a self-contained HTML report and JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from core.diff_sides import DiffError, Side, is_raw_file, load_raw, load_snapshot, resolve_pair

# Manifest keys that have their own section (or are ids / timestamps) and are not
# compared as "other manifest changes".
_OWN_SECTIONS = {
    "snapshot_id", "name", "created_at", "config", "config_hash", "inputs", "code", "stages",
    "rows", "class_distribution", "files", "review", "model", "templates",
}
SAMPLES = 5  # rows of each cause shown as samples (the smallest row ids)
MAX_ROWS = 5_000  # rows of each kind the report lists (HTML and JSON)

__all__ = ["DatasetDiff", "DiffError", "check_gates", "compute_diff", "diff_report", "parse_gates"]


# ---------------------------------------------------------------------------- computing


@dataclass
class DatasetDiff:
    """The diff of two dataset versions. Frames hold the rows; dicts the summaries."""

    a: dict
    b: dict
    splits: list[dict]
    added: pl.DataFrame  # row_id, split, label, input, output, synthetic, cause, stage, reason
    removed: pl.DataFrame  # row_id, split, label, input, output, cause, stage, reason, detail, duplicate_of, cluster, duplicate_input
    changed: pl.DataFrame  # row_id, split, fields, input_a/b, output_a/b, label_a/b
    new_conflicts: pl.DataFrame  # B's label_conflict rows that A did not have
    resolved_conflicts: int
    classes: list[dict]
    label_changes: list[dict]
    added_by_cause: list[dict]
    removed_by_cause: list[dict]
    funnel: list[dict]
    reasons: list[dict]
    quarantine: list[dict]
    rejection_changes: list[dict] = field(default_factory=list)  # rejected in both, for a different reason
    changes: dict = field(default_factory=dict)  # config, model, templates, code, inputs, other

    def totals(self) -> dict:
        train_a = self.a["rows"]["train"]
        train = [s for s in self.splits if s["split"] == "train"]
        t = train[0] if train else {"added": 0, "removed": 0, "changed": 0, "label_changed": 0}
        pct = (lambda n: round(100 * n / train_a, 3)) if train_a else (lambda n: 0.0 if n == 0 else 100.0)
        max_move = max((abs(c["share_delta"]) for c in self.classes), default=0.0)
        return {
            "added": int(self.added.height),
            "removed": int(self.removed.height),
            "changed": int(self.changed.height),
            "label_changed": int(sum(s["label_changed"] for s in self.splits)),
            "new_conflicts": int(self.new_conflicts.height),
            "new_conflict_groups": int(self.new_conflicts["cluster"].n_unique()) if self.new_conflicts.height else 0,
            "resolved_conflicts": self.resolved_conflicts,
            "train_added_pct": pct(t["added"]),
            "train_removed_pct": pct(t["removed"]),
            "train_changed_pct": pct(t["changed"]),
            "max_share_move": round(max_move, 3),
        }

    def to_dict(self, *, max_rows: int | None = MAX_ROWS, samples: int = SAMPLES, gates: list[str] | None = None) -> dict:
        """JSON-able form: summaries, deterministic samples, and up to `max_rows` rows of each kind.

        Rows are ordered by row id (a hash), so a truncated list is an unbiased sample
        and the same inputs give the same output.
        """
        frames = {
            "added": self.added,
            "removed": self.removed.drop("cluster"),
            "changed": self.changed,
            "new_conflicts": self.new_conflicts,
        }
        rows, truncated = {}, {}
        for kind, df in frames.items():
            df = df.sort("row_id")
            shown = df if max_rows is None or max_rows <= 0 else df.head(max_rows)
            rows[kind] = shown.to_dicts()
            truncated[kind] = df.height - shown.height
        return {
            "a": self.a,
            "b": self.b,
            "totals": self.totals(),
            "gates": gates or [],
            "splits": self.splits,
            "removed_by_cause": self.removed_by_cause,
            "added_by_cause": self.added_by_cause,
            "classes": self.classes,
            "label_changes": self.label_changes,
            "changes": self.changes,
            "funnel": self.funnel,
            "reasons": self.reasons,
            "quarantine": self.quarantine,
            "rejection_changes": self.rejection_changes,
            "samples": self.samples(samples),
            "rows": rows,
            "rows_truncated": truncated,
        }

    def samples(self, k: int = SAMPLES) -> dict:
        """A few rows of each kind: the smallest row ids (ids are hashes: deterministic, unbiased).

        Added and removed rows are sampled per cause (the commonest causes first), so
        every reason a row went is illustrated.
        """
        def per_cause(df: pl.DataFrame, order: list[dict], keys: list[str]) -> list[dict]:
            out = []
            for group in order[:8]:
                sel = df
                for key in keys:
                    sel = sel.filter(pl.col(key).eq_missing(group[key]))
                out.extend(sel.sort("row_id").head(k if len(order) == 1 else max(1, min(k, 3))).to_dicts())
            return out

        label_changed = self.changed.filter(pl.col("label_a").ne_missing(pl.col("label_b")))
        return {
            "added": per_cause(self.added, self.added_by_cause, ["cause", "stage", "reason"]),
            "removed": per_cause(self.removed.drop("cluster"), self.removed_by_cause, ["stage", "reason"]),
            "changed": self.changed.filter(pl.col("label_a").eq_missing(pl.col("label_b"))).sort("row_id").head(k).to_dicts(),
            "label_changed": label_changed.sort("row_id").head(k).to_dicts(),
            "new_conflicts": self._conflict_sample(k),
        }

    def _conflict_sample(self, k: int) -> list[dict]:
        if self.new_conflicts.height == 0:
            return []
        clusters = self.new_conflicts.select("cluster").unique().sort("cluster").head(k)
        return self.new_conflicts.join(clusters, on="cluster").sort("cluster", "row_id").to_dicts()


def _counts(df: pl.DataFrame, by: list[str], name: str) -> pl.DataFrame:
    return df.group_by(by).agg(pl.len().alias(name))


def _by_cause(df: pl.DataFrame, keys: list[str]) -> list[dict]:
    """Counts per cause and split, commonest first, ties by name."""
    if df.height == 0:
        return []
    wide = (
        df.group_by(keys)
        .agg(
            total=pl.len(),
            train=(pl.col("split") == "train").sum(),
            eval=(pl.col("split") == "eval").sum(),
        )
        .sort(["total", *keys], descending=[True] + [False] * len(keys), nulls_last=True)
    )
    return [{k: (int(v) if isinstance(v, int) else v) for k, v in r.items()} for r in wide.to_dicts()]


def _flatten(obj, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for key in sorted(obj):
            out.update(_flatten(obj[key], f"{prefix}.{key}" if prefix else str(key)))
        if not obj and prefix:
            out[prefix] = {}
        return out
    return {prefix: obj}


def config_changes(old: dict | None, new: dict | None) -> list[dict]:
    """Dotted keys whose value differs: [{key, old, new}], sorted by key (absent = None)."""
    fa, fb = _flatten(old or {}), _flatten(new or {})
    missing = object()
    out = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, missing), fb.get(key, missing)
        if va != vb:
            out.append({"key": key, "old": None if va is missing else va, "new": None if vb is missing else vb})
    return out


def _manifest_changes(ma: dict | None, mb: dict | None) -> dict:
    ma, mb = ma or {}, mb or {}
    changes: dict = {}
    if not ma:
        return {"config": [], "model": None, "templates": [], "code": [], "inputs": [], "other": []}
    changes["config"] = config_changes(ma.get("config"), mb.get("config"))
    changes["model"] = (
        {"old": ma.get("model"), "new": mb.get("model")} if ma.get("model") != mb.get("model") else None
    )
    ta, tb = ma.get("templates") or {}, mb.get("templates") or {}
    templates = []
    for name in sorted(set(ta) | set(tb)):
        ha = ta.get(name, {}).get("hash") if isinstance(ta.get(name), dict) else ta.get(name)
        hb = tb.get(name, {}).get("hash") if isinstance(tb.get(name), dict) else tb.get(name)
        if ta.get(name) != tb.get(name):
            status = "added" if name not in ta else "removed" if name not in tb else "changed"
            templates.append({"name": name, "status": status, "old": ha, "new": hb})
    changes["templates"] = templates
    changes["code"] = config_changes(ma.get("code"), mb.get("code"))
    ia = {(i["split"], i["path"]): i.get("sha256") for i in ma.get("inputs", [])}
    ib = {(i["split"], i["path"]): i.get("sha256") for i in mb.get("inputs", [])}
    changes["inputs"] = [
        {
            "split": k[0],
            "path": k[1],
            "status": "added" if k not in ia else "removed" if k not in ib else "changed",
            "old": (ia.get(k) or "")[:12] or None,
            "new": (ib.get(k) or "")[:12] or None,
        }
        for k in sorted(set(ia) | set(ib))
        if ia.get(k) != ib.get(k)
    ]
    other_a = {k: v for k, v in ma.items() if k not in _OWN_SECTIONS}
    other_b = {k: v for k, v in mb.items() if k not in _OWN_SECTIONS}
    changes["other"] = config_changes(other_a, other_b)
    return changes


def _funnel(ma: dict | None, mb: dict | None) -> tuple[list[dict], list[dict]]:
    """Stages side by side, and per (stage, reason) counts in A and B."""
    sa = {s["stage"]: s for s in (ma or {}).get("stages", [])}
    sb = {s["stage"]: s for s in (mb or {}).get("stages", [])}
    order = [s["stage"] for s in (mb or {}).get("stages", [])]
    order += [s for s in sa if s not in order]
    funnel, reasons = [], []
    for stage in order:
        row = {"stage": stage}
        for tag, s in (("a", sa.get(stage)), ("b", sb.get(stage))):
            row[f"rows_in_{tag}"] = s["rows_in"] if s else None
            row[f"kept_{tag}"] = s["kept"] if s else None
            row[f"filtered_{tag}"] = sum(s["filtered"].values()) if s else None
            row[f"quarantined_{tag}"] = sum(s["quarantined"].values()) if s else None
        funnel.append(row)
        ra = {**(sa[stage]["filtered"] if stage in sa else {}), **(sa[stage]["quarantined"] if stage in sa else {})}
        rb = {**(sb[stage]["filtered"] if stage in sb else {}), **(sb[stage]["quarantined"] if stage in sb else {})}
        for reason in sorted(set(ra) | set(rb)):
            a, b = ra.get(reason, 0), rb.get(reason, 0)
            reasons.append({"stage": stage, "reason": reason, "a": a, "b": b, "delta": b - a})
    return funnel, reasons


def _classes(a: Side, b: Side, added: pl.DataFrame, removed: pl.DataFrame) -> list[dict]:
    """Per class on the train split: count, share, synthetic share in A and B; rows added and removed."""
    def side(df: pl.DataFrame, tag: str) -> pl.DataFrame:
        return df.group_by("label").agg(
            (pl.col("split") == "train").sum().alias(f"train_{tag}"),
            ((pl.col("split") == "train") & pl.col("synthetic")).sum().alias(f"synthetic_{tag}"),
            (pl.col("split") == "eval").sum().alias(f"eval_{tag}"),
        )

    train = pl.col("split") == "train"
    table = (
        side(a.kept, "a")
        .join(side(b.kept, "b"), on="label", how="full", coalesce=True, nulls_equal=True)
        .join(_counts(added.filter(train), ["label"], "added"), on="label", how="left", nulls_equal=True)
        .join(_counts(removed.filter(train), ["label"], "removed"), on="label", how="left", nulls_equal=True)
        .fill_null(0)
    )
    total_a = max(int(table["train_a"].sum()), 1)
    total_b = max(int(table["train_b"].sum()), 1)
    table = table.with_columns(
        share_a=100 * pl.col("train_a") / total_a,
        share_b=100 * pl.col("train_b") / total_b,
        synthetic_share_a=pl.when(pl.col("train_a") > 0).then(100 * pl.col("synthetic_a") / pl.col("train_a")).otherwise(0.0),
        synthetic_share_b=pl.when(pl.col("train_b") > 0).then(100 * pl.col("synthetic_b") / pl.col("train_b")).otherwise(0.0),
    ).with_columns(share_delta=pl.col("share_b") - pl.col("share_a"))
    table = table.with_columns(_abs=pl.col("share_delta").abs()).sort(["_abs", "label"], descending=[True, False], nulls_last=True).drop("_abs")
    out = []
    for r in table.to_dicts():
        out.append(
            {
                "label": r["label"],
                "train_a": int(r["train_a"]),
                "train_b": int(r["train_b"]),
                "share_a": round(r["share_a"], 3),
                "share_b": round(r["share_b"], 3),
                "share_delta": round(r["share_delta"], 3),
                "synthetic_a": int(r["synthetic_a"]),
                "synthetic_b": int(r["synthetic_b"]),
                "synthetic_share_a": round(r["synthetic_share_a"], 3),
                "synthetic_share_b": round(r["synthetic_share_b"], 3),
                "eval_a": int(r["eval_a"]),
                "eval_b": int(r["eval_b"]),
                "added": int(r["added"]),
                "removed": int(r["removed"]),
            }
        )
    return out


def diff_sides(a: Side, b: Side) -> DatasetDiff:
    """Compare two loaded sides (see the module docstring for what each kind means)."""
    ka, kb = a.kept, b.kept
    ids_a, ids_b = ka.select("row_id"), kb.select("row_id")

    # Added: kept in B only. Was it filtered in A (and why), generated, or new input?
    prev = a.rejected.select("row_id", pl.col("stage").alias("_pstage"), pl.col("reason").alias("_preason")).unique(
        "row_id", keep="first", maintain_order=True
    )
    added = (
        kb.join(ids_a, on="row_id", how="anti")
        .join(prev, on="row_id", how="left")
        .with_columns(
            cause=pl.when(pl.col("_preason").is_not_null()).then(pl.lit("previously_rejected"))
            .when(pl.col("synthetic")).then(pl.lit("synthetic"))
            .otherwise(pl.lit("new_row")),
        )
        .select(
            "row_id", "split", "label", "input", "output", "synthetic", "cause",
            pl.col("_pstage").alias("stage"), pl.col("_preason").alias("reason"), "source", "line",
        )
    )

    # Removed: kept in A only. B's rejected table says which stage and reason, else its quarantine.
    why = b.rejected.select("row_id", "stage", "reason", "detail", "duplicate_of", "cluster").unique(
        "row_id", keep="first", maintain_order=True
    )
    quarantined = (
        b.quarantine.select("split", "source", "line", pl.col("reason").alias("_qreason"))
        .unique(["split", "source", "line"], keep="first", maintain_order=True)
    )
    texts = pl.concat([kb.select("row_id", "input"), ka.select("row_id", "input")]).unique(
        "row_id", keep="first", maintain_order=True
    ).rename({"row_id": "duplicate_of", "input": "duplicate_input"})
    removed = (
        ka.join(ids_b, on="row_id", how="anti")
        .join(why, on="row_id", how="left")
        .join(quarantined, on=["split", "source", "line"], how="left")
        .with_columns(
            cause=pl.when(pl.col("reason").is_not_null()).then(pl.lit("rejected"))
            .when(pl.col("_qreason").is_not_null()).then(pl.lit("quarantined"))
            .otherwise(pl.lit("absent")),
            stage=pl.when(pl.col("reason").is_not_null()).then(pl.col("stage"))
            .when(pl.col("_qreason").is_not_null()).then(pl.lit("ingest"))
            .otherwise(pl.lit("input")),
            reason=pl.coalesce("reason", "_qreason", pl.lit("not_in_inputs")),
        )
        .join(texts, on="duplicate_of", how="left")
        .select(
            "row_id", "split", "label", "input", "output", "synthetic", "cause", "stage", "reason", "detail",
            "duplicate_of", "duplicate_input", "cluster", "source", "line",
        )
    )

    # Changed: kept in both, different text or label.
    both = ka.join(kb, on="row_id", how="inner", suffix="_b")
    differs = {
        "input": pl.col("input").ne_missing(pl.col("input_b")),
        "output": pl.col("output").ne_missing(pl.col("output_b")),
        "label": pl.col("label").ne_missing(pl.col("label_b")),
    }
    changed = (
        both.filter(differs["input"] | differs["output"] | differs["label"])
        .with_columns(
            fields=pl.concat_str(
                [pl.when(e).then(pl.lit(k)) for k, e in differs.items()], separator=",", ignore_nulls=True
            )
        )
        .select(
            "row_id", "split", "fields",
            pl.col("input").alias("input_a"), pl.col("input_b"),
            pl.col("output").alias("output_a"), pl.col("output_b"),
            pl.col("label").alias("label_a"), pl.col("label_b"),
        )
    )

    # Label conflicts B has that A did not (by row id); and A's that B no longer has.
    conflict = pl.col("reason") == "label_conflict"
    ca = a.rejected.filter(conflict).select("row_id")
    cb = b.rejected.filter(conflict)
    new_conflicts = cb.join(ca, on="row_id", how="anti").select(
        "row_id", "split", "cluster", "label", "input", "output", "source", "line"
    )
    resolved = int(ca.join(cb.select("row_id"), on="row_id", how="anti").height)

    label_changes = (
        changed.filter(pl.col("label_a").ne_missing(pl.col("label_b")))
        .group_by("label_a", "label_b")
        .len()
        .sort(["len", "label_a", "label_b"], descending=[True, False, False])
        .rename({"len": "rows"})
        .to_dicts()
    )

    # Rows rejected by both versions, but by another stage or for another reason.
    rejection_changes = (
        a.rejected.select("row_id", pl.col("stage").alias("stage_a"), pl.col("reason").alias("reason_a"))
        .unique("row_id", keep="first", maintain_order=True)
        .join(why.select("row_id", pl.col("stage").alias("stage_b"), pl.col("reason").alias("reason_b")), on="row_id")
        .filter(pl.col("stage_a").ne_missing(pl.col("stage_b")) | pl.col("reason_a").ne_missing(pl.col("reason_b")))
        .group_by("stage_a", "reason_a", "stage_b", "reason_b")
        .len()
        .sort(["len", "stage_a", "reason_a", "stage_b", "reason_b"], descending=[True, False, False, False, False])
        .rename({"len": "rows"})
        .to_dicts()
    )

    splits = []
    all_splits = sorted(set(ka["split"].unique().to_list()) | set(kb["split"].unique().to_list()))
    for split in all_splits:
        s = pl.col("split") == split
        splits.append(
            {
                "split": split,
                "a": int(ka.filter(s).height),
                "b": int(kb.filter(s).height),
                "added": int(added.filter(s).height),
                "removed": int(removed.filter(s).height),
                "changed": int(changed.filter(s).height),
                "label_changed": int(changed.filter(s & pl.col("label_a").ne_missing(pl.col("label_b"))).height),
            }
        )

    funnel, reasons = _funnel(a.manifest, b.manifest)
    qa = a.quarantine.group_by("reason").len()
    qb = b.quarantine.group_by("reason").len()
    quarantine = [
        {"reason": r["reason"], "a": int(r["len"] or 0), "b": int(r["len_b"] or 0)}
        for r in qa.join(qb, on="reason", how="full", coalesce=True, suffix="_b").sort("reason").to_dicts()
    ]
    return DatasetDiff(
        a=a.info(),
        b=b.info(),
        splits=splits,
        added=added,
        removed=removed,
        changed=changed,
        new_conflicts=new_conflicts,
        resolved_conflicts=resolved,
        classes=_classes(a, b, added, removed),
        label_changes=label_changes,
        added_by_cause=_by_cause(added, ["cause", "stage", "reason"]),
        removed_by_cause=_by_cause(removed, ["cause", "stage", "reason"]),
        funnel=funnel,
        reasons=reasons,
        quarantine=quarantine,
        rejection_changes=rejection_changes,
        changes=_manifest_changes(a.manifest, b.manifest),
    )


def compute_diff(
    a: str | Path | None = None,
    b: str | Path | None = None,
    *,
    root: str | Path = "data/snapshots",
    name: str | None = None,
    raw_split: str | None = None,
) -> DatasetDiff:
    """Diff snapshot (or raw file) A against snapshot B; defaults as in `resolve_pair`."""
    a_ref, b_folder = resolve_pair(a, b, root=root, name=name)
    side_b = load_snapshot(b_folder)
    if is_raw_file(a_ref):
        side_a, side_b = load_raw(a_ref, side_b, split=raw_split)
    else:
        side_a = load_snapshot(a_ref)
    return diff_sides(side_a, side_b)


# ---------------------------------------------------------------------------- gating

GATES = {
    "share": "a class's train share moved by more than N percentage points",
    "removed": "more than N% of A's train rows removed",
    "added": "more than N% of A's train rows added",
    "changed": "more than N% of A's train rows changed",
    "label_changes": "more than N rows changed label",
    "conflicts": "more than N new label-conflict rows (bare `conflicts`: any)",
}


def parse_gates(specs: list[str]) -> dict[str, float]:
    """`["share=2", "conflicts"]` -> {"share": 2.0, "conflicts": 0.0}; raise ValueError listing every bad one."""
    rules, problems = {}, []
    for spec in specs:
        for part in [p.strip() for p in spec.split(",") if p.strip()]:
            key, _, value = part.partition("=")
            key = key.strip().replace("-", "_")
            if key not in GATES:
                problems.append(f"--fail-on {part!r}: unknown gate; one of {', '.join(GATES)}")
                continue
            try:
                rules[key] = float(value) if value else 0.0
            except ValueError:
                problems.append(f"--fail-on {part!r}: {value!r} is not a number")
    if problems:
        raise ValueError("\n".join(problems))
    return rules


def check_gates(diff: DatasetDiff, rules: dict[str, float]) -> list[str]:
    """Every threshold the diff exceeds, as readable reasons (empty list: passes)."""
    t = diff.totals()
    out = []
    if "share" in rules:
        for c in diff.classes:  # sorted by |delta|: the largest moves first
            if abs(c["share_delta"]) > rules["share"]:
                out.append(
                    f"share: class {c['label']!r} moved {c['share_delta']:+.3f} points "
                    f"({c['share_a']:.2f}% -> {c['share_b']:.2f}%), limit {rules['share']:g}"
                )
    for key, total in (("removed", "train_removed_pct"), ("added", "train_added_pct"), ("changed", "train_changed_pct")):
        if key in rules and t[total] > rules[key]:
            out.append(f"{key}: {t[total]:.2f}% of A's train rows {key}, limit {rules[key]:g}%")
    if "label_changes" in rules and t["label_changed"] > rules["label_changes"]:
        out.append(f"label_changes: {t['label_changed']} rows changed label, limit {rules['label_changes']:g}")
    if "conflicts" in rules and t["new_conflicts"] > rules["conflicts"]:
        out.append(
            f"conflicts: {t['new_conflicts']} new label-conflict rows in {t['new_conflict_groups']} groups, "
            f"limit {rules['conflicts']:g}"
        )
    return out


# ---------------------------------------------------------------------------- entry point


def diff_report(
    a: str | Path | None = None,
    b: str | Path | None = None,
    *,
    root: str | Path = "data/snapshots",
    name: str | None = None,
    fail_on: list[str] | None = None,
    max_rows: int | None = MAX_ROWS,
    raw_split: str | None = None,
) -> dict:
    """Compute the diff and its gate failures; return the JSON-able report dict."""
    rules = parse_gates(fail_on or [])
    d = compute_diff(a, b, root=root, name=name, raw_split=raw_split)
    report = d.to_dict(max_rows=max_rows, gates=check_gates(d, rules))
    report["gates_checked"] = sorted(rules)
    return report
