"""The curation stages as functions over polars frames: clean, then exact dedupe.

Each stage takes the kept rows of the stage before and returns (kept, dropped,
counts); the flow (flows/curate_and_train.py) reads and writes them as Parquet
between stages. The filters themselves live in filters/, one concern per module.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from curate.config import Config
from curate.schema import StageCounts, count_stage, split_dropped
from filters.balance import cap_classes, plan_balance
from filters.blocklist import filter_blocklist, load_terms
from filters.exact_dedup import dedupe_exact
from filters.labels import filter_labels
from filters.near_dup import dedupe_near, find_contamination
from filters.normalize import normalize_text
from filters.pii import redact_pii
from filters.quality import filter_by_length, filter_repetition, with_drop_columns


def clean(rows: pl.DataFrame, config: Config, *, root: Path | None = None) -> tuple[pl.DataFrame, pl.DataFrame, StageCounts]:
    """Normalize, redact PII, and drop rows failing quality, blocklist or label checks.

    Order matters: normalization first (every check sees one spelling), PII next (so
    the length checks see what will be trained on), then the drops; the first reason
    that fires is the one recorded.
    """
    c = config.clean
    df = normalize_text(rows, unicode_form=c.normalize.unicode_form, collapse_whitespace=c.normalize.collapse_whitespace)
    if c.pii.enabled:
        df = redact_pii(df, kinds=list(c.pii.kinds))
    df = with_drop_columns(df)
    df = filter_by_length(df, min_chars=c.min_chars, max_chars=c.max_chars, min_words=c.min_words)
    df = filter_repetition(df, max_repeated_word_fraction=c.max_repeated_word_fraction, max_char_run=c.max_char_run)
    if c.blocklist.enabled:
        terms = load_terms([config.read_path(f, root) for f in c.blocklist.files], list(c.blocklist.terms))
        df = filter_blocklist(df, terms=terms)
    df = filter_labels(df, labels=config.label_set(root), output_pattern=config.task.output_pattern)
    kept, dropped = split_dropped(df, stage="clean")
    return kept, dropped, count_stage("clean", rows, kept, dropped)


def dedupe(rows: pl.DataFrame, config: Config) -> tuple[pl.DataFrame, pl.DataFrame, StageCounts]:
    """Exact dedupe, then near-duplicate decontamination and dedupe of the train split.

    Passes, in order (each sees only the rows the earlier ones kept):
    1. exact duplicates, exact label conflicts, exact eval contamination (filters/exact_dedup.py);
    2. near eval contamination: train rows whose input is a near-duplicate of an eval input
       (`eval_contamination`, duplicate_of = the eval row); the eval split never changes;
    3. near duplicates within train (`near_duplicate`, duplicate_of = the kept row of the
       cluster, cluster = that row's id, detail = the verified Jaccard); clusters whose rows
       disagree on the label are `label_conflict` (all out, listed) or keep one row flagged.
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
        df = _near(df, config)
    kept, dropped = split_dropped(df, stage="dedupe")
    return kept, dropped, count_stage("dedupe", rows, kept, dropped)


def _near(df: pl.DataFrame, config: Config) -> pl.DataFrame:
    n = config.dedupe.near
    settings = dict(threshold=n.threshold, num_perm=n.num_perm, ngram=n.ngram, shingle=n.shingle, seed=n.seed)
    if config.runner.kind == "ray":  # signatures, bands and verification as Ray tasks; the same links
        from curate.near_dup_ray import ray_links_fn

        settings["links_fn"] = ray_links_fn(config.runner.shards)
    df = df.with_row_index("_pos")
    live_train = df.filter(pl.col("drop_reason").is_null() & (pl.col("split") == "train"))
    live_eval = df.filter(pl.col("drop_reason").is_null() & (pl.col("split") == "eval"))
    patches = []
    if config.dedupe.decontaminate and live_eval.height and live_train.height:
        leaks = find_contamination(live_train, live_eval, **settings)
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
        marked = dedupe_near(live_train, text_col="input", id_col="row_id", label_col="label", keep=n.keep, **settings)
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


def balance(rows: pl.DataFrame, config: Config) -> tuple[pl.DataFrame, pl.DataFrame, StageCounts, pl.DataFrame]:
    """Plan the class mix of the train split and cap majority classes (filters/balance.py).

    Returns (kept, dropped, counts, plan); dropped rows carry reason `class_cap`; the
    plan's `synth` column is the synthesis budget per class. Eval rows pass unchanged.
    """
    b = config.balance
    train = rows.filter(pl.col("split") == "train")
    counts = dict(train.group_by("label").len().iter_rows())
    labels = config.label_set()
    if labels is not None:  # classes with no rows left still get a target (and a synthesis budget)
        counts = {label: counts.get(label, 0) for label in labels}
    plan = plan_balance(
        counts,
        strategy=b.strategy if b.enabled else "none",
        total=b.total, power=b.power, weights=b.weights, floor=b.floor, cap=b.cap,
        max_synthetic_ratio=b.max_synthetic_ratio,
    )
    marked = cap_classes(train, plan, seed=config.seed)
    kept_train, dropped = split_dropped(marked, stage="balance")
    kept = pl.concat([kept_train, rows.filter(pl.col("split") != "train")])
    return kept, dropped, count_stage("balance", rows, kept, dropped), plan
