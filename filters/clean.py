"""The clean stage: normalize, redact PII, drop what fails quality, blocklist and label checks.

    kept, dropped, counts = clean(rows, config)

Like every stage (filters/dedupe.py, filters/balance.py) it takes the kept rows of the
stage before and returns (kept, dropped, counts); the flow's task (flows/tasks.py) reads
and writes them as Parquet. Each check lives in its own module of filters/; this one
only composes them, in order, from the config's `clean:` section. Synthesis cleans its
generations with the same function.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.config import Config
from core.schema import StageCounts, count_stage, split_dropped
from filters.blocklist import filter_blocklist, load_terms
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
        terms = load_terms([config.read_path(f, root) for f in c.blocklist.files], list(c.blocklist.terms))
        df = filter_blocklist(df, terms=terms)
    df = filter_labels(df, labels=config.label_set(root), output_pattern=config.task.output_pattern)
    kept, dropped = split_dropped(df, stage="clean")
    return kept, dropped, count_stage("clean", rows, kept, dropped)
