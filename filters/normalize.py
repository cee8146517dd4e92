"""Text normalization: Unicode form and whitespace; labels in their one spelling.

Input columns: input, output, and label when present. Output columns: input
(normalized), output (trimmed), label (core.schema.label_expr).
Normalization never drops a row; it runs first so that every later filter, and exact
dedupe, see one spelling of the same text.
"""

from __future__ import annotations

import polars as pl

from core.schema import CONTROL, INVISIBLE, label_expr


def normalize_text(df: pl.DataFrame, *, unicode_form: str = "NFKC", collapse_whitespace: bool = True) -> pl.DataFrame:
    """Normalize `input` (Unicode form, whitespace), trim `output`, put `label` in the labels' spelling.

    Rows from ingest already have normalized labels; rows that enter later (synthetic
    ones) get them here, so the label filter and balancing compare one spelling.
    """
    text = pl.col("input")
    if unicode_form != "none":
        text = text.str.normalize(unicode_form)
    if collapse_whitespace:
        # \s covers newlines, tabs and Unicode spaces; characters that show nothing are removed too.
        text = text.str.replace_all(INVISIBLE, "").str.replace_all(r"\s+", " ")
    # Control characters (NUL and friends) carry no meaning in task text and break tokenizers.
    text = text.str.replace_all(CONTROL, "")
    columns = {"input": text.str.strip_chars(), "output": pl.col("output").str.strip_chars()}
    if "label" in df.columns:
        columns["label"] = label_expr(pl.col("label"))
    return df.with_columns(**columns)
