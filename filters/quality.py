"""Quality filters: length bounds and repetition.

Input columns: input, drop_reason. Output columns: drop_reason, drop_detail.
Reasons: too_short, too_long, too_few_words, repetitive.

Thresholds come from the config (core/config.py CleanConfig); the defaults fit
short task inputs such as support messages (banking77: 13 to 433 characters):
a message under 8 characters ("help", "?") carries no intent, and a real message
repeats a word in at most a third of its positions.
"""

from __future__ import annotations

import polars as pl


def _mark(reason: str, condition: pl.Expr, detail: pl.Expr) -> list[pl.Expr]:
    """Set drop_reason/drop_detail where `condition` holds and no earlier filter fired."""
    fire = pl.col("drop_reason").is_null() & condition
    return [
        pl.when(fire).then(pl.lit(reason)).otherwise(pl.col("drop_reason")).alias("drop_reason"),
        pl.when(fire).then(detail).otherwise(pl.col("drop_detail")).alias("drop_detail"),
    ]


def with_drop_columns(df: pl.DataFrame) -> pl.DataFrame:
    """Add empty drop_reason / drop_detail columns if the frame has none yet."""
    missing = [pl.lit(None, dtype=pl.String).alias(c) for c in ("drop_reason", "drop_detail") if c not in df.columns]
    return df.with_columns(missing) if missing else df


def filter_by_length(df: pl.DataFrame, *, min_chars: int, max_chars: int, min_words: int) -> pl.DataFrame:
    """Mark inputs shorter than min_chars, longer than max_chars, or with fewer than min_words words."""
    df = with_drop_columns(df)
    n_chars = pl.col("input").str.len_chars()
    n_words = pl.col("input").str.count_matches(r"\S+")
    df = df.with_columns(_mark("too_short", n_chars < min_chars, pl.format("{} chars < {}", n_chars, pl.lit(min_chars))))
    df = df.with_columns(_mark("too_long", n_chars > max_chars, pl.format("{} chars > {}", n_chars, pl.lit(max_chars))))
    return df.with_columns(_mark("too_few_words", n_words < min_words, pl.format("{} words < {}", n_words, pl.lit(min_words))))


def filter_repetition(df: pl.DataFrame, *, max_repeated_word_fraction: float, max_char_run: int) -> pl.DataFrame:
    """Mark inputs whose words are mostly repeats, or with a character repeated max_char_run+ times in a row."""
    df = with_drop_columns(df)
    # Materialize the word statistics once; expressions over lists inside when/then are slow.
    words = pl.col("input").str.to_lowercase().str.extract_all(r"\w+")
    df = df.with_columns(_words=words).with_columns(_n=pl.col("_words").list.len(), _uniq=pl.col("_words").list.n_unique())
    df = df.with_columns(_rep=pl.when(pl.col("_n") > 0).then(1 - pl.col("_uniq") / pl.col("_n")).otherwise(0.0))
    # Rust regex has no back-references, so the run check is one alternative per letter.
    # Digits are left out on purpose: amounts such as 1000000 are real content.
    run = "|".join(f"{c}{{{max_char_run},}}" for c in "abcdefghijklmnopqrstuvwxyz")
    char_run = pl.col("input").str.to_lowercase().str.contains(f"(?:{run})")
    df = df.with_columns(
        _mark(
            "repetitive",
            (pl.col("_n") >= 4) & (pl.col("_rep") > max_repeated_word_fraction),
            pl.format("{}% of words repeat", (pl.col("_rep") * 100).round(0).cast(pl.Int64)),
        )
    ).drop("_words", "_n", "_uniq", "_rep")
    return df.with_columns(_mark("repetitive", char_run.fill_null(False), pl.lit(f"a character repeats {max_char_run}+ times in a row")))
