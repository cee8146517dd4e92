"""Label validity: the output must be well formed and its class one of the task's.

Input columns: output, label, drop_reason. Output columns: drop_reason, drop_detail.
Reasons: invalid_output (the output does not fully match task.output_pattern, e.g. a
meaning representation with an unclosed bracket), unknown_label (the class is not
in the task's fixed set; ingest already quarantines these for sources, this guards
rows that enter later, such as synthetic ones). Labels are compared in one spelling
(core.schema.label_expr) on both sides, as ingest compares them.
"""

from __future__ import annotations

import polars as pl

from core.schema import label_expr, normalize_labels
from filters.quality import with_drop_columns


def filter_labels(df: pl.DataFrame, *, labels: list[str] | None, output_pattern: str | None) -> pl.DataFrame:
    df = with_drop_columns(df)
    if output_pattern is not None:
        bad = pl.col("drop_reason").is_null() & ~pl.col("output").str.contains(f"^(?:{output_pattern})$")
        df = df.with_columns(
            drop_reason=pl.when(bad).then(pl.lit("invalid_output")).otherwise(pl.col("drop_reason")),
            drop_detail=pl.when(bad).then(pl.lit("output does not match task.output_pattern")).otherwise(pl.col("drop_detail")),
        )
    if labels is not None:
        bad = pl.col("drop_reason").is_null() & ~label_expr(pl.col("label")).is_in(normalize_labels(labels))
        df = df.with_columns(
            drop_reason=pl.when(bad).then(pl.lit("unknown_label")).otherwise(pl.col("drop_reason")),
            drop_detail=pl.when(bad).then(pl.format("label '{}' is not one of the task's classes", pl.col("label"))).otherwise(pl.col("drop_detail")),
        )
    return df
