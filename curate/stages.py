"""The curation stages as functions over polars frames: clean, then exact dedupe.

Each stage takes the kept rows of the stage before and returns (kept, dropped,
counts); the flow (flows/curate_and_train.py) reads and writes them as Parquet
between stages. The filters themselves live in filters/, one concern per module.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from curate.config import Config, resolve_path
from curate.schema import StageCounts, count_stage, split_dropped
from filters.blocklist import filter_blocklist, load_terms
from filters.exact_dedup import dedupe_exact
from filters.labels import filter_labels
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
        terms = load_terms([resolve_path(f, root) for f in c.blocklist.files], list(c.blocklist.terms))
        df = filter_blocklist(df, terms=terms)
    df = filter_labels(df, labels=config.label_set(root), output_pattern=config.task.output_pattern)
    kept, dropped = split_dropped(df, stage="clean")
    return kept, dropped, count_stage("clean", rows, kept, dropped)


def dedupe(rows: pl.DataFrame, config: Config) -> tuple[pl.DataFrame, pl.DataFrame, StageCounts]:
    """Exact duplicates, label conflicts and exact eval contamination (see filters/exact_dedup.py)."""
    d = config.dedupe
    if not d.exact.enabled and not d.decontaminate:
        kept, dropped = split_dropped(with_drop_columns(rows), stage="dedupe")
    else:
        df = dedupe_exact(rows, casefold=d.exact.casefold, decontaminate=d.decontaminate)
        if not d.exact.enabled:  # decontamination only
            df = df.with_columns(
                drop_reason=pl.when(pl.col("drop_reason") == "eval_contamination").then(pl.col("drop_reason"))
            )
        kept, dropped = split_dropped(df, stage="dedupe")
    return kept, dropped, count_stage("dedupe", rows, kept, dropped)
