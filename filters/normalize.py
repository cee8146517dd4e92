"""Text normalization: Unicode form and whitespace.

Input columns: input, output. Output columns: input (normalized), output (trimmed).
Normalization never drops a row; it runs first so that every later filter, and exact
dedupe, see one spelling of the same text.
"""

from __future__ import annotations

import polars as pl


def normalize_text(df: pl.DataFrame, *, unicode_form: str = "NFKC", collapse_whitespace: bool = True) -> pl.DataFrame:
    """Normalize `input` (Unicode form, whitespace) and trim `output`."""
    text = pl.col("input")
    if unicode_form != "none":
        text = text.str.normalize(unicode_form)
    if collapse_whitespace:
        # \s covers newlines, tabs and Unicode spaces; zero-width characters are removed too.
        text = text.str.replace_all(r"[\u200b\u200c\u200d\u2060\ufeff]", "").str.replace_all(r"\s+", " ")
    # Control characters (NUL and friends) carry no meaning in task text and break tokenizers.
    text = text.str.replace_all(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "")
    return df.with_columns(input=text.str.strip_chars(), output=pl.col("output").str.strip_chars())
