"""Exact dedupe on normalized input, label conflicts, and exact eval decontamination.

Input columns: row_id, split, input, output (after `clean`, so the input is already
normalized). Output columns: drop_reason, drop_detail, duplicate_of, cluster.

Reasons:
- exact_duplicate: same input and same output as an earlier row of the same split;
  duplicate_of names the kept row (the earliest), cluster the group.
- label_conflict: the same input appears with different outputs. Every row of such a
  group is kept out of training and listed for review (cluster = the group); nothing
  is resolved silently.
- eval_contamination: a train row whose input is also an eval input; duplicate_of
  names the eval row. The eval split itself is never changed by this check.
"""

from __future__ import annotations

import polars as pl

from filters.quality import with_drop_columns


def _key(casefold: bool) -> pl.Expr:
    return pl.col("input").str.to_lowercase() if casefold else pl.col("input")


def dedupe_exact(df: pl.DataFrame, *, casefold: bool = False, decontaminate: bool = True) -> pl.DataFrame:
    """Mark exact duplicates, label conflicts and (train rows only) exact eval contamination."""
    df = with_drop_columns(df).with_columns(_key=_key(casefold), _pos=pl.int_range(pl.len()))
    for col in ("duplicate_of", "cluster"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias(col))
    live = pl.col("drop_reason").is_null()
    group = ["split", "_key"]
    # Per (split, key) group among live rows: first row id, number of distinct outputs.
    stats = (
        df.filter(live)
        .group_by(group, maintain_order=True)
        .agg(
            _first=pl.col("row_id").first(),
            _n_outputs=pl.col("output").n_unique(),
            _size=pl.len(),
        )
    )
    df = df.join(stats, on=group, how="left", maintain_order="left")
    conflict = live & (pl.col("_n_outputs") > 1)
    duplicate = live & ~conflict & (pl.col("row_id") != pl.col("_first"))
    df = df.with_columns(
        drop_reason=pl.when(conflict).then(pl.lit("label_conflict"))
        .when(duplicate).then(pl.lit("exact_duplicate"))
        .otherwise(pl.col("drop_reason")),
        drop_detail=pl.when(conflict).then(pl.format("{} outputs for the same input", pl.col("_n_outputs")))
        .when(duplicate).then(pl.format("{} copies", pl.col("_size")))
        .otherwise(pl.col("drop_detail")),
        duplicate_of=pl.when(duplicate).then(pl.col("_first")).otherwise(pl.col("duplicate_of")),
        cluster=pl.when(conflict | duplicate | (live & (pl.col("_size") > 1)))
        .then(pl.concat_str([pl.lit("x"), pl.col("_first")]))
        .otherwise(pl.col("cluster")),
    ).drop("_first", "_n_outputs", "_size")

    if decontaminate:
        eval_keys = (
            df.filter((pl.col("split") == "eval") & pl.col("drop_reason").is_null())
            .group_by("_key", maintain_order=True)
            .agg(_eval_id=pl.col("row_id").first())
        )
        df = df.join(eval_keys, on="_key", how="left", maintain_order="left")
        leak = pl.col("drop_reason").is_null() & (pl.col("split") == "train") & pl.col("_eval_id").is_not_null()
        df = df.with_columns(
            drop_reason=pl.when(leak).then(pl.lit("eval_contamination")).otherwise(pl.col("drop_reason")),
            drop_detail=pl.when(leak).then(pl.lit("same input as an eval row")).otherwise(pl.col("drop_detail")),
            duplicate_of=pl.when(leak).then(pl.col("_eval_id")).otherwise(pl.col("duplicate_of")),
        ).drop("_eval_id")
    return df.sort("_pos").drop("_key", "_pos")
