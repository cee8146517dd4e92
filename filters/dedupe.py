"""The dedupe stage: exact duplicates, then near duplicates and eval contamination, with lineage.

    kept, dropped, counts = dedupe(rows, config)

Passes, in order (each sees only the rows the earlier ones kept):
1. exact duplicates, exact label conflicts, exact eval contamination (filters/exact_dedup.py);
2. near eval contamination: train rows whose input is a near-duplicate of an eval input
   (`eval_contamination`, duplicate_of = the eval row); the eval split never changes;
3. near duplicates within train (`near_duplicate`, duplicate_of = the kept row of the
   cluster, cluster = that row's id, detail = the verified Jaccard); clusters whose rows
   disagree on the label are `label_conflict` (all out, listed) or keep one row flagged.

The near-duplicate passes are filters/near_dup.py's, with one NearDupSettings built from
the config's `dedupe.near`. Who runs them is the caller's choice: `links_fn` (e.g.
filters/near_dup_ray.py's, which the flow passes on `runner.kind: ray`) runs passes 1-6 as
units of work elsewhere and finds the same links.
"""

from __future__ import annotations

from typing import Callable

import polars as pl

from core.config import Config, NearDedupeConfig
from core.schema import StageCounts, count_stage, split_dropped
from filters.exact_dedup import dedupe_exact
from filters.near_dup import NearDupLinks, NearDupSettings, dedupe_near, find_contamination
from filters.quality import with_drop_columns


def near_dup_settings(near: NearDedupeConfig) -> NearDupSettings:
    """The near-dup passes' settings from the config's `dedupe.near` section."""
    return NearDupSettings(threshold=near.threshold, num_perm=near.num_perm, ngram=near.ngram, shingle=near.shingle,
                           seed=near.seed)


def dedupe(rows: pl.DataFrame, config: Config, *, links_fn: Callable[..., NearDupLinks] | None = None,
           ) -> tuple[pl.DataFrame, pl.DataFrame, StageCounts]:
    """Exact dedupe, then near-duplicate decontamination and dedupe of the train split (module docstring).

    Input: rows in the row schema. Returns (kept, dropped, counts); dropped rows carry
    reason, detail, duplicate_of and cluster.
    """
    d = config.dedupe
    df = with_drop_columns(rows)
    for col in ("duplicate_of", "cluster"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias(col))
    if d.exact.enabled or d.decontaminate:
        df = dedupe_exact(df, casefold=d.exact.casefold, decontaminate=d.decontaminate)
        if not d.exact.enabled:  # decontamination only
            keep = pl.col("drop_reason") == "eval_contamination"
            df = df.with_columns(
                drop_reason=pl.when(keep).then(pl.col("drop_reason")),
                drop_detail=pl.when(keep).then(pl.col("drop_detail")),
                duplicate_of=pl.when(keep).then(pl.col("duplicate_of")),
                cluster=pl.when(keep).then(pl.col("cluster")),
            )
    if d.near.enabled:
        df = _near(df, config, links_fn)
    kept, dropped = split_dropped(df, stage="dedupe")
    return kept, dropped, count_stage("dedupe", rows, kept, dropped)


def _near(df: pl.DataFrame, config: Config, links_fn: Callable[..., NearDupLinks] | None) -> pl.DataFrame:
    n = config.dedupe.near
    settings = near_dup_settings(n)
    df = df.with_row_index("_pos")
    live_train = df.filter(pl.col("drop_reason").is_null() & (pl.col("split") == "train"))
    live_eval = df.filter(pl.col("drop_reason").is_null() & (pl.col("split") == "eval"))
    patches = []
    if config.dedupe.decontaminate and live_eval.height and live_train.height:
        leaks = find_contamination(live_train, live_eval, settings, links_fn=links_fn)
        patches.append(
            leaks.select(
                "row_id",
                pl.lit("eval_contamination").alias("_reason"),
                pl.format("near-duplicate of an eval row (jaccard {})", pl.col("similarity").round(3)).alias("_detail"),
                pl.col("eval_match").alias("_dup"),
                pl.lit(None, dtype=pl.String).alias("_cluster"),
            )
        )
        live_train = live_train.filter(~pl.col("row_id").is_in(leaks["row_id"].implode()))
    if live_train.height:
        marked = dedupe_near(live_train, settings, text_col="input", id_col="row_id", label_col="label", keep=n.keep,
                             links_fn=links_fn)
        keeper_id = pl.when(pl.col("kept")).then(pl.col("row_id")).otherwise(pl.col("duplicate_of"))
        marked = marked.with_columns(_cluster_id=keeper_id, _size=pl.len().over("cluster"))
        conflict = pl.col("label_conflict") & (pl.lit(n.on_conflict == "exclude") | ~pl.col("kept"))
        patches.append(
            marked.filter(conflict | ~pl.col("kept")).select(
                "row_id",
                pl.when(pl.col("label_conflict") & pl.lit(n.on_conflict == "exclude"))
                .then(pl.lit("label_conflict")).otherwise(pl.lit("near_duplicate")).alias("_reason"),
                pl.when(pl.col("label_conflict") & pl.lit(n.on_conflict == "exclude"))
                .then(pl.format("near-duplicates with different labels ({} rows)", pl.col("_size")))
                .otherwise(pl.format("jaccard {} in a cluster of {}", pl.col("similarity").round(3), pl.col("_size")))
                .alias("_detail"),
                pl.col("duplicate_of").cast(pl.String).alias("_dup"),
                pl.concat_str([pl.lit("n"), pl.col("_cluster_id")]).alias("_cluster"),
            )
        )
    if not patches:
        return df.drop("_pos")
    patch = pl.concat(patches)
    df = df.join(patch, on="row_id", how="left", maintain_order="left")
    hit = pl.col("_reason").is_not_null()
    return df.with_columns(
        drop_reason=pl.when(hit).then(pl.col("_reason")).otherwise(pl.col("drop_reason")),
        drop_detail=pl.when(hit).then(pl.col("_detail")).otherwise(pl.col("drop_detail")),
        duplicate_of=pl.when(hit).then(pl.col("_dup")).otherwise(pl.col("duplicate_of")),
        cluster=pl.when(hit).then(pl.col("_cluster")).otherwise(pl.col("cluster")),
    ).drop("_pos", "_reason", "_detail", "_dup", "_cluster")
