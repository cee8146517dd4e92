"""Harmful-content blocklist: drop inputs containing a listed term or phrase.

Input columns: input, drop_reason. Output columns: drop_reason, drop_detail.
Reason: blocklisted. Terms match case-insensitively as whole tokens: no word character
right before or after ("shot" matches "be shot" but not "screenshot"; "$$$" matches
"pay $$$ now" but not "cost$$$"); the detail names the term that matched.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from filters.quality import with_drop_columns


def load_terms(files: list[Path], terms: list[str]) -> list[str]:
    """Read blocklist files (one term per line, '#' comments) plus extra terms; de-duplicated, sorted."""
    out = {t.strip().lower() for t in terms if t.strip()}
    for path in files:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip().lower()
            if line:
                out.add(line)
    return sorted(out)


def filter_blocklist(df: pl.DataFrame, *, terms: list[str]) -> pl.DataFrame:
    """Mark rows whose input contains any of `terms` as whole tokens."""
    df = with_drop_columns(df)
    if not terms:
        return df
    # Longest first so the detail names the most specific phrase that matched.
    alternation = "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in sorted(terms, key=len, reverse=True))
    # Not \b: it needs a word character on one side, so a term that starts or ends with
    # punctuation ("$$$", "@sshole") never matched next to a space. A non-word character
    # or the text's end on each side is a boundary for any term, and the same one as \b
    # for terms of word characters. polars' regex has no lookarounds: the boundary
    # characters are consumed, and the term is group 1.
    pattern = rf"(?i)(?:^|\W)({alternation})(?:\W|$)"
    hit = pl.col("drop_reason").is_null() & pl.col("input").str.contains(pattern)
    return df.with_columns(
        drop_reason=pl.when(hit).then(pl.lit("blocklisted")).otherwise(pl.col("drop_reason")),
        drop_detail=pl.when(hit)
        .then(pl.format("matched '{}'", pl.col("input").str.extract(pattern, 1).str.to_lowercase()))
        .otherwise(pl.col("drop_detail")),
    )
