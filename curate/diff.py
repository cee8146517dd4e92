"""Dataset diffs: what changed between two dataset versions, why, and per class.

    curate diff                         # latest snapshot of the only dataset vs its predecessor
    curate diff A B --out-md d.md --out-html d.html --out-json d.json --fail-on share=2

    from curate.diff import compute_diff, render_markdown
    d = compute_diff("data/snapshots/banking77/9a1ce6d3a809", "data/snapshots/banking77/655b0e85425b")
    print(render_markdown(d.to_dict()))

Rows are matched by their stable `row_id` (curate.schema.row_ids: a hash of split, raw
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
The result renders to markdown (bounded, for a pull-request comment), a
self-contained HTML report and JSON; `check_gates` turns `--fail-on` thresholds into
a list of failures for CI.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from curate.schema import ROW_SCHEMA
from curate.snapshot import list_snapshots, read_manifest, resolve_snapshot

# Columns the diff reads; any other column (provenance of synthetic rows, ...) is ignored.
KEPT_SCHEMA: dict[str, pl.DataType] = {k: v for k, v in ROW_SCHEMA.items() if k != "pii"}
REJECTED_SCHEMA: dict[str, pl.DataType] = {
    **KEPT_SCHEMA,
    "stage": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    "duplicate_of": pl.String(),
    "cluster": pl.String(),
}
QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    "split": pl.String(),
    "source": pl.String(),
    "line": pl.Int64(),
    "reason": pl.String(),
}
RAW_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
# Manifest keys that have their own section (or are ids / timestamps) and are not
# compared as "other manifest changes".
_OWN_SECTIONS = {
    "snapshot_id", "name", "created_at", "config", "config_hash", "inputs", "code", "stages",
    "rows", "class_distribution", "files", "review", "model", "templates",
}
# Text in markdown and HTML cells is cut to this many characters: a PR comment shows
# the gist of a row; the JSON has the full text.
CELL_CHARS = 120
MD_MAX_CHARS = 60_000
SAMPLES = 5
MD_CLASSES = 30  # a PR comment lists the 30 largest class moves; the HTML and JSON list all
MAX_ROWS = 5_000


class DiffError(ValueError):
    """The two sides cannot be compared (missing snapshot, unreadable raw file)."""


# ---------------------------------------------------------------------------- loading


@dataclass
class Side:
    """One version of the dataset as the diff sees it."""

    kind: str  # "snapshot" or "raw"
    ref: str  # folder or file path
    label: str  # short name for headings: snapshot id or file name
    manifest: dict | None
    kept: pl.DataFrame  # KEPT_SCHEMA: train and eval rows
    rejected: pl.DataFrame  # REJECTED_SCHEMA
    quarantine: pl.DataFrame  # QUARANTINE_COLUMNS

    def info(self) -> dict:
        m = self.manifest or {}
        rows = {
            "train": int(self.kept.filter(pl.col("split") == "train").height),
            "eval": int(self.kept.filter(pl.col("split") == "eval").height),
            "rejected": int(self.rejected.height),
            "quarantine": int(self.quarantine.height),
        }
        return {
            "kind": self.kind,
            "ref": self.ref,
            "id": self.label,
            "name": m.get("name"),
            "created_at": m.get("created_at"),
            "rows": rows,
            "review": m.get("review"),
        }


def _read(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The schema's columns of a Parquet file; absent columns become null (false for synthetic)."""
    if not path.exists():
        return pl.DataFrame(schema=schema)
    present = pl.read_parquet_schema(path)
    df = pl.read_parquet(path, columns=[c for c in schema if c in present])
    missing = []
    for name, dtype in schema.items():
        if name not in df.columns:
            missing.append((pl.lit(False) if name == "synthetic" else pl.lit(None)).cast(dtype).alias(name))
    if missing:
        df = df.with_columns(missing)
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])


def load_snapshot(folder: str | Path) -> Side:
    folder = Path(folder)
    manifest = read_manifest(folder)
    kept = pl.concat([_read(folder / "train.parquet", KEPT_SCHEMA), _read(folder / "eval.parquet", KEPT_SCHEMA)])
    return Side(
        kind="snapshot",
        ref=str(folder),
        label=manifest.get("snapshot_id", folder.name),
        manifest=manifest,
        kept=kept.with_columns(pl.col("synthetic").fill_null(False)),
        rejected=_read(folder / "rejected.parquet", REJECTED_SCHEMA),
        quarantine=_read(folder / "quarantine.parquet", QUARANTINE_COLUMNS),
    )


def is_raw_file(ref: str | Path) -> bool:
    path = Path(ref)
    return path.is_file() and path.suffix.lower() in RAW_SUFFIXES


def load_raw(path: str | Path, against: Side, *, split: str | None = None) -> tuple[Side, Side]:
    """Read a raw input file as ingest would with B's configuration; return (raw side, B restricted).

    The split is the one B's manifest gives the file (matched by sha256, then path),
    else `split`, else "train". When the file is one of B's inputs, B's rows are
    restricted to that source, and raw rows take B's row id of the same (source, line).
    """
    from curate.config import Config, ConfigError, resolve_path
    from curate.ingest import ingest
    from curate.snapshot import file_sha256

    path = Path(path)
    if against.manifest is None or "config" not in against.manifest:
        raise DiffError("a raw file is compared with a snapshot: B must be a snapshot")
    digest = file_sha256(path)
    match = None
    for entry in against.manifest.get("inputs", []):
        if entry.get("sha256") == digest:
            match = entry
            break
    if match is None:
        for entry in against.manifest.get("inputs", []):
            if Path(entry.get("path", "")).resolve() == path.resolve():
                match = entry
                break
    split = split or (match["split"] if match else "train")
    # Rows carry the source as the config names it; the manifest's inputs may hold it resolved.
    source = str(path)
    if match is not None:
        named = pl.concat([against.kept.select("source"), against.rejected.select("source")]).unique()["source"]
        source = next((s for s in named.to_list() if s and resolve_path(s).resolve() == resolve_path(match["path"]).resolve()), match["path"])
    cfg = dict(against.manifest["config"])
    cfg["data"] = {"train": [], "eval": [], **{split: [{"path": str(path.resolve())}]}}
    try:
        config = Config.model_validate(cfg)
        rows, quarantine, _ = ingest(config)
    except (ConfigError, ValueError, OSError) as exc:
        raise DiffError(f"{path}: cannot read as B's input: {exc}") from exc
    rows = rows.with_columns(source=pl.lit(source))
    quarantine = quarantine.with_columns(source=pl.lit(source))
    b = against
    if match is not None:
        same = (pl.col("source") == source) & (pl.col("split") == split)
        b = Side(
            kind=b.kind, ref=b.ref, label=b.label, manifest=b.manifest,
            kept=b.kept.filter(same), rejected=b.rejected.filter(same), quarantine=b.quarantine.filter(same),
        )
        if match.get("sha256") == digest:
            # Byte-identical file: (source, line) names the same record on both sides.
            by_line = pl.concat([b.kept.select("line", "row_id"), b.rejected.select("line", "row_id")]).unique(
                "line", keep="first", maintain_order=True
            )
            rows = rows.join(by_line.rename({"row_id": "_b_id"}), on="line", how="left").with_columns(
                row_id=pl.coalesce("_b_id", "row_id")
            ).drop("_b_id")
    raw = Side(
        kind="raw",
        ref=str(path),
        label=path.name,
        manifest=None,
        kept=rows.select([pl.col(c).cast(t) for c, t in KEPT_SCHEMA.items()]),
        rejected=pl.DataFrame(schema=REJECTED_SCHEMA),
        quarantine=quarantine.select([pl.col(c).cast(t) for c, t in QUARANTINE_COLUMNS.items()]),
    )
    return raw, b


def resolve_pair(
    a: str | Path | None, b: str | Path | None, *, root: str | Path = "data/snapshots", name: str | None = None
) -> tuple[str, Path]:
    """(A, B) folders or file: B defaults to the latest snapshot, A to B's predecessor in index.jsonl.

    A may be a raw file. `name` picks the dataset when B is not given (default: the
    dataset of A, else the only dataset under `root`).
    """
    root = Path(root)
    if b is None:
        if name is None and a is not None and not is_raw_file(a):
            name = resolve_snapshot(a, root).parent.name
        if name is None:
            names = sorted(p.name for p in root.iterdir() if (p / "index.jsonl").exists()) if root.exists() else []
            if len(names) != 1:
                raise DiffError(f"name the dataset (--name): {len(names)} datasets under {root}: {', '.join(names)}")
            name = names[0]
        ids = list_snapshots(root, name)
        if not ids:
            raise DiffError(f"no snapshots of {name!r} under {root}")
        b_folder = root / name / ids[-1]
    else:
        try:
            b_folder = resolve_snapshot(b, root)
        except FileNotFoundError as exc:
            raise DiffError(str(exc)) from None
    if a is None:
        ids = list_snapshots(b_folder.parent.parent, b_folder.parent.name)
        if b_folder.name not in ids or ids.index(b_folder.name) == 0:
            raise DiffError(f"snapshot {b_folder.name} has no predecessor in {b_folder.parent / 'index.jsonl'}")
        return str(b_folder.parent / ids[ids.index(b_folder.name) - 1]), b_folder
    if is_raw_file(a):
        return str(a), b_folder
    try:
        return str(resolve_snapshot(a, root)), b_folder
    except FileNotFoundError as exc:
        raise DiffError(str(exc)) from None


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


# ---------------------------------------------------------------------------- markdown


def _cell(value, limit: int = CELL_CHARS) -> str:
    if value is None:
        return ""
    text = str(value).replace("\r", " ").replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("`", "'")


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
    return f"`{side['id']}`" + (" (raw file)" if side["kind"] == "raw" else "")


def _sections(d: dict) -> list[tuple[str, list[str]]]:
    """Markdown sections, most important first: (title, lines)."""
    t, a, b = d["totals"], d["a"], d["b"]
    out: list[tuple[str, list[str]]] = []

    head = [f"## Dataset diff: {b.get('name') or ''} {_side_name(a)} → {_side_name(b)}", ""]
    if d["gates"]:
        head.append(f"**❌ blocked: {len(d['gates'])} gate(s) failed**")
        head += [f"- {g}" for g in d["gates"]]
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
        head.append(f"Review of B: **{review.get('decision')}** by {review.get('by')} at {review.get('at')}.")
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
        lines += ["Config:", ""] + [f"- `{c['key']}`: {_cell(json.dumps(c['old']))} → {_cell(json.dumps(c['new']))}" for c in ch["config"]] + [""]
    if ch.get("model"):
        lines += [f"Model: `{ch['model']['old']}` → `{ch['model']['new']}`", ""]
    if ch.get("templates"):
        lines += ["Templates:", ""] + [f"- `{x['name']}` {x['status']}: {x['old']} → {x['new']}" for x in ch["templates"]] + [""]
    if ch.get("inputs"):
        lines += ["Inputs:", ""] + [f"- {x['split']} `{x['path']}` {x['status']}: {x['old']} → {x['new']}" for x in ch["inputs"]] + [""]
    if ch.get("code"):
        lines += ["Code:", ""] + [f"- `{c['key']}`: {c['old']} → {c['new']}" for c in ch["code"]] + [""]
    if ch.get("other"):
        lines += ["Other manifest fields:", ""] + [f"- `{c['key']}`: {_cell(json.dumps(c['old']))} → {_cell(json.dumps(c['new']))}" for c in ch["other"]] + [""]
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
        f"\n<sub>A: {d['a']['ref']} · B: {d['b']['ref']} · rows matched by row_id · "
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


def _svg_chart(classes: list[dict], *, limit: int = 40) -> str:
    """Horizontal bars: each class's train share in A (grey) and B (blue), the largest moves first."""
    shown = classes[:limit]
    if not shown:
        return "<p>No classes.</p>"
    top = max(max(c["share_a"], c["share_b"]) for c in shown) or 1.0
    label_w, bar_w, row_h, pad = 300, 560, 22, 30
    height = pad + row_h * len(shown) + 10
    parts = [
        f'<svg id="class-chart" xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 140}" height="{height}" '
        f'role="img" aria-label="class share A vs B">',
        f'<rect x="{label_w}" y="4" width="12" height="10" fill="#9aa5b1"/><text x="{label_w + 16}" y="13" font-size="11">A</text>',
        f'<rect x="{label_w + 40}" y="4" width="12" height="10" fill="#2f6fde"/><text x="{label_w + 56}" y="13" font-size="11">B</text>',
        f'<text x="{label_w + 90}" y="13" font-size="11" fill="#555">train share %, largest moves first'
        + (f" (top {limit} of {len(classes)})" if len(classes) > limit else "") + "</text>",
    ]
    for i, c in enumerate(shown):
        y = pad + i * row_h
        wa = bar_w * c["share_a"] / top
        wb = bar_w * c["share_b"] / top
        color = "#c0392b" if c["share_delta"] < 0 else "#1e8449"
        name = html.escape(str(c["label"] if c["label"] is not None else "(none)"))
        parts.append(
            f'<g class="bar"><title>{name}: {c["share_a"]:.2f}% → {c["share_b"]:.2f}% ({c["share_delta"]:+.2f})</title>'
            f'<text x="{label_w - 6}" y="{y + 14}" font-size="11" text-anchor="end">{name[:45]}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{wa:.1f}" height="8" fill="#9aa5b1"/>'
            f'<rect x="{label_w}" y="{y + 10}" width="{wb:.1f}" height="8" fill="#2f6fde"/>'
            f'<text x="{label_w + max(wa, wb) + 6:.1f}" y="{y + 15}" font-size="10" fill="{color}">{c["share_delta"]:+.2f}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _html_table(header: list[str], rows: list[list], table_id: str = "") -> str:
    if not rows:
        return '<p class="muted">None.</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r) + "</tr>" for r in rows
    )
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1f24;max-width:1400px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dee4;padding-bottom:4px}
.muted{color:#57606a} .cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #d8dee4;border-radius:6px;padding:8px 14px;min-width:110px} .card b{display:block;font-size:20px}
.fail{background:#ffebe9;border:1px solid #ff8182;padding:8px 12px;border-radius:6px}
.pass{background:#dafbe1;border:1px solid #4ac26b;padding:8px 12px;border-radius:6px}
table{border-collapse:collapse;margin:6px 0;font-size:13px} th,td{border:1px solid #d8dee4;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0} td{max-width:520px;overflow-wrap:anywhere}
.controls{display:flex;gap:8px;flex-wrap:wrap;align-items:center;margin:8px 0}
.controls input,.controls select{padding:4px 6px;font-size:13px} #rows-wrap{max-height:700px;overflow:auto;border:1px solid #d8dee4}
.neg{color:#c0392b} .pos{color:#1e8449}
"""

_JS = r"""
(function(){
  var data = JSON.parse(document.getElementById('diff-data').textContent);
  var kinds = {
    added: ['row_id','split','label','cause','stage','reason','input','output'],
    removed: ['row_id','split','label','stage','reason','detail','duplicate_of','duplicate_input','input'],
    changed: ['row_id','split','fields','label_a','label_b','input_a','input_b','output_a','output_b'],
    new_conflicts: ['row_id','split','cluster','label','input']
  };
  var kindSel = document.getElementById('f-kind'), q = document.getElementById('f-q'),
      split = document.getElementById('f-split'), reason = document.getElementById('f-reason'),
      cls = document.getElementById('f-class'), table = document.getElementById('rows-table'),
      count = document.getElementById('row-count');
  function opts(sel, values){
    var keep = sel.value; sel.innerHTML = '';
    var all = document.createElement('option'); all.value = ''; all.textContent = 'all'; sel.appendChild(all);
    values.forEach(function(v){ var o = document.createElement('option'); o.value = v; o.textContent = v; sel.appendChild(o); });
    if (values.indexOf(keep) >= 0) sel.value = keep;
  }
  function uniq(rows, f){ var s = {}; rows.forEach(function(r){ var v = f(r); if (v != null) s[v] = 1; }); return Object.keys(s).sort(); }
  function reasonOf(r){ return r.reason != null ? r.reason : (r.fields != null ? r.fields : r.cause); }
  function labelOf(r){ return r.label != null ? r.label : r.label_b; }
  function refreshFilters(){
    var rows = data.rows[kindSel.value] || [];
    opts(split, uniq(rows, function(r){ return r.split; }));
    opts(reason, uniq(rows, reasonOf));
    opts(cls, uniq(rows, labelOf));
  }
  function render(){
    var kind = kindSel.value, rows = data.rows[kind] || [], cols = kinds[kind];
    var needle = q.value.trim().toLowerCase();
    var shown = rows.filter(function(r){
      if (split.value && r.split !== split.value) return false;
      if (reason.value && reasonOf(r) !== reason.value) return false;
      if (cls.value && labelOf(r) !== cls.value) return false;
      if (!needle) return true;
      return cols.some(function(c){ var v = r[c]; return v != null && String(v).toLowerCase().indexOf(needle) >= 0; });
    });
    var thead = '<thead><tr>' + cols.map(function(c){ return '<th>' + c + '</th>'; }).join('') + '</tr></thead>';
    var body = document.createElement('tbody');
    shown.slice(0, 1000).forEach(function(r){
      var tr = document.createElement('tr');
      cols.forEach(function(c){ var td = document.createElement('td'); td.textContent = r[c] == null ? '' : String(r[c]); tr.appendChild(td); });
      body.appendChild(tr);
    });
    table.innerHTML = thead; table.appendChild(body);
    var trunc = data.rows_truncated[kind] || 0;
    count.textContent = shown.length + ' of ' + rows.length + ' ' + kind.replace('_', ' ') + ' rows' +
      (shown.length > 1000 ? ' (first 1000 displayed)' : '') + (trunc ? ' (' + trunc + ' more in the full diff: see JSON)' : '');
    count.setAttribute('data-shown', String(shown.length));
  }
  kindSel.addEventListener('change', function(){ refreshFilters(); render(); });
  [q, split, reason, cls].forEach(function(el){ el.addEventListener('input', render); el.addEventListener('change', render); });
  refreshFilters(); render();
  document.documentElement.setAttribute('data-diff-ready', '1');
})();
"""


def render_html(d: dict, *, chart: str = "svg") -> str:
    """A self-contained HTML report: inline CSS, JS and chart (SVG, or a matplotlib PNG), no network."""
    t, a, b = d["totals"], d["a"], d["b"]
    esc = html.escape
    gate_html = ""
    if d["gates"]:
        gate_html = '<div class="fail" id="gates"><b>Blocked: {} gate(s) failed</b><ul>{}</ul></div>'.format(
            len(d["gates"]), "".join(f"<li>{esc(g)}</li>" for g in d["gates"])
        )
    elif d.get("gates_checked"):
        gate_html = '<div class="pass" id="gates"><b>Every gate passed</b></div>'
    cards = "".join(
        f'<div class="card"><span class="muted">{esc(k)}</span><b>{v}</b></div>'
        for k, v in (
            ("added", t["added"]), ("removed", t["removed"]), ("changed", t["changed"]),
            ("label changes", t["label_changed"]), ("new conflicts", t["new_conflicts"]),
            ("max share move", f"{t['max_share_move']:.2f} pts"),
        )
    )
    chart_html = _svg_chart(d["classes"]) if chart == "svg" else _png_chart(d["classes"])
    classes = _html_table(
        ["class", "A", "share A %", "B", "share B %", "Δ points", "added", "removed", "synthetic A %", "synthetic B %", "eval A", "eval B"],
        [[c["label"], c["train_a"], f"{c['share_a']:.2f}", c["train_b"], f"{c['share_b']:.2f}", f"{c['share_delta']:+.2f}",
          c["added"], c["removed"], f"{c['synthetic_share_a']:.1f}", f"{c['synthetic_share_b']:.1f}", c["eval_a"], c["eval_b"]]
         for c in d["classes"]],
        "class-table",
    )
    splits = _html_table(
        ["split", "A", "B", "added", "removed", "changed", "label changed"],
        [[s["split"], s["a"], s["b"], s["added"], s["removed"], s["changed"], s["label_changed"]] for s in d["splits"]],
        "split-table",
    )
    removed = _html_table(["stage", "reason", "total", "train", "eval"],
                          [[r["stage"], r["reason"], r["total"], r["train"], r["eval"]] for r in d["removed_by_cause"]], "removed-table")
    added = _html_table(["cause", "total", "train", "eval"],
                        [[_cause(r), r["total"], r["train"], r["eval"]] for r in d["added_by_cause"]], "added-table")
    labels = _html_table(["from", "to", "rows"], [[r["label_a"], r["label_b"], r["rows"]] for r in d["label_changes"]])
    rejections = _html_table(
        ["A stage/reason", "B stage/reason", "rows"],
        [[f"{r['stage_a']}/{r['reason_a']}", f"{r['stage_b']}/{r['reason_b']}", r["rows"]] for r in d["rejection_changes"]],
        "rejection-table",
    )
    ch = d["changes"]
    recipe = []
    for c in ch.get("config", []):
        recipe.append(["config", c["key"], json.dumps(c["old"]), json.dumps(c["new"])])
    if ch.get("model"):
        recipe.append(["model", "model", ch["model"]["old"], ch["model"]["new"]])
    for x in ch.get("templates", []):
        recipe.append(["template", f"{x['name']} ({x['status']})", x["old"], x["new"]])
    for x in ch.get("inputs", []):
        recipe.append(["input", f"{x['split']} {x['path']} ({x['status']})", x["old"], x["new"]])
    for c in ch.get("code", []):
        recipe.append(["code", c["key"], c["old"], c["new"]])
    for c in ch.get("other", []):
        recipe.append(["manifest", c["key"], json.dumps(c["old"]), json.dumps(c["new"])])
    recipe_html = _html_table(["what", "key", "A", "B"], recipe, "recipe-table") if recipe else "<p>Nothing changed.</p>"
    funnel = _html_table(
        ["stage", "rows in A", "rows in B", "kept A", "kept B", "filtered A", "filtered B", "quarantined A", "quarantined B"],
        [[f["stage"], f["rows_in_a"], f["rows_in_b"], f["kept_a"], f["kept_b"], f["filtered_a"], f["filtered_b"],
          f["quarantined_a"], f["quarantined_b"]] for f in d["funnel"]],
        "funnel-table",
    ) + _html_table(["stage", "reason", "A", "B", "Δ"], [[r["stage"], r["reason"], r["a"], r["b"], _signed(r["delta"])] for r in d["reasons"]])
    payload = json.dumps({"rows": d["rows"], "rows_truncated": d["rows_truncated"]}, ensure_ascii=False, default=str)
    payload = payload.replace("</", "<\\/").replace("<!--", "<\\!--")
    kinds = "".join(f'<option value="{k}">{k.replace("_", " ")} ({t[k]})</option>'
                    for k in ("removed", "added", "changed", "new_conflicts"))
    review = b.get("review")
    review_html = (f'<p>Review of B: <b>{esc(str(review.get("decision")))}</b> by {esc(str(review.get("by")))} at {esc(str(review.get("at")))}'
                   + (f' — {esc(str(review.get("note")))}' if review.get("note") else "") + "</p>") if review else ""
    title = f"Dataset diff {b.get('name') or ''}: {a['id']} → {b['id']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{esc(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="muted">A: {esc(a['ref'])} ({esc(a['kind'])}{', ' + esc(str(a['created_at'])) if a.get('created_at') else ''}) · B: {esc(b['ref'])} ({esc(str(b.get('created_at')))}) · rows matched by row_id</p>
{gate_html}{review_html}
<div class="cards">{cards}</div>
<h2>Rows per split</h2>{splits}
<h2>Class mix (train)</h2><div id="chart">{chart_html}</div>
<h2>Removed rows by cause</h2>{removed}
<h2>Added rows by cause</h2>{added}
<h2>Label changes</h2>{labels}
<h2>Rejected in both, for another reason</h2>{rejections}
<h2>Classes</h2>{classes}
<h2>What changed in the recipe</h2>{recipe_html}
<h2>Funnel, A vs B</h2>{funnel}
<h2>Rows</h2>
<div class="controls">
<label>kind <select id="f-kind">{kinds}</select></label>
<label>search <input id="f-q" type="search" placeholder="text, id, label…"></label>
<label>split <select id="f-split"></select></label>
<label>reason <select id="f-reason"></select></label>
<label>class <select id="f-class"></select></label>
<span id="row-count" class="muted"></span>
</div>
<div id="rows-wrap"><table id="rows-table"></table></div>
<script type="application/json" id="diff-data">{payload}</script>
<script>{_JS}</script>
</body></html>
"""


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
    return f'<img id="class-chart" alt="class share A vs B" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


# ---------------------------------------------------------------------------- entry points


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
        return f"## Dataset diff\n\nNothing to compare: {exc}.\n"
    return render_markdown(report, max_chars=max_chars)

