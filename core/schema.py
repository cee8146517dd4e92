"""The row schema every stage reads and writes, and the row accounting every stage obeys.

A curated row (train, eval, and later synthetic):

| column    | type   | meaning                                                                |
|-----------|--------|------------------------------------------------------------------------|
| row_id    | str    | stable id: hash of split, raw input, raw output and occurrence number  |
| split     | str    | "train" or "eval"                                                      |
| source    | str    | file the row came from (as named in the config)                        |
| line      | i64    | 1-based line of the record's start (row number for Parquet / HF)       |
| input     | str    | the task input (text), normalized and redacted by `clean`              |
| output    | str    | the target the model must produce                                      |
| label     | str    | the class: the output itself, or derived from it (e.g. dialogue act)   |
| pii       | list   | kinds of PII redacted from the input (empty when none)                 |
| synthetic | bool   | false for real rows                                                    |

A stage never loses a row: rows in = kept + filtered + quarantined. Filtered rows keep
every column and gain `stage`, `reason` (stable snake_case, becomes a metric) and
`detail`; quarantined rows (unusable records) carry `source`, `line`, `reason`,
`detail` and the `raw` record text.

A label is compared in one spelling everywhere (ingest, the label filter, normalization):
`label_expr` / `normalize_labels` (NFKC, invisible and control characters removed,
whitespace runs as one space, trimmed), so `a`, `a` + a zero-width space and a
full-width `ａ` are one class, whatever the text normalization settings are.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

ROW_SCHEMA: dict[str, pl.DataType] = {
    "row_id": pl.String(),
    "split": pl.String(),
    "source": pl.String(),
    "line": pl.Int64(),
    "input": pl.String(),
    "output": pl.String(),
    "label": pl.String(),
    "pii": pl.List(pl.String()),
    "synthetic": pl.Boolean(),
}
ROW_COLUMNS = list(ROW_SCHEMA)

# Characters that show nothing: the soft hyphen, zero-width spaces and joiners, the
# bidirectional marks, embeddings and isolates, the word joiner and invisible operators,
# and a byte-order mark inside text. Text normalization removes them too (filters/normalize.py).
INVISIBLE = r"[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
# Control characters other than tab and line ends: no meaning in task text, they break tokenizers.
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"


def label_expr(expr: pl.Expr) -> pl.Expr:
    """The class a label names: NFKC, invisible and control characters removed, whitespace runs
    as one space, trimmed. Always NFKC (not `clean.normalize.unicode_form`): what a class is
    cannot depend on how text is cleaned."""
    return (
        expr.str.normalize("NFKC").str.replace_all(INVISIBLE, "").str.replace_all(CONTROL, "")
        .str.replace_all(r"\s+", " ").str.strip_chars()
    )


def spell_labels(labels: list[str]) -> list[str]:
    """Each label in the spelling `label_expr` gives rows' labels (same order and length)."""
    series = pl.Series("label", labels, dtype=pl.String)
    return series.to_frame().select(label_expr(pl.col("label")))["label"].to_list()


def normalize_labels(labels: list[str]) -> list[str]:
    """A fixed class set in the spelling `label_expr` gives rows' labels (order kept, repeats once)."""
    return list(dict.fromkeys(spell_labels(labels)))


QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "split": pl.String(),
    "source": pl.String(),
    "line": pl.Int64(),
    "reason": pl.String(),
    "detail": pl.String(),
    "raw": pl.String(),
}

# Added to filtered rows. duplicate_of / cluster are filled by dedupe stages only.
DROP_SCHEMA: dict[str, pl.DataType] = {
    "stage": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    "duplicate_of": pl.String(),
    "cluster": pl.String(),
}


class AccountingError(RuntimeError):
    """A stage's outputs do not add up to its input: a row would have been lost."""


def empty_rows() -> pl.DataFrame:
    return pl.DataFrame(schema=ROW_SCHEMA)


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def empty_dropped() -> pl.DataFrame:
    return pl.DataFrame(schema={**ROW_SCHEMA, **DROP_SCHEMA})


def row_ids(split: pl.Series, inputs: pl.Series, outputs: pl.Series) -> pl.Series:
    """Stable ids: sha256 of (split, input, output, n) where n counts earlier identical rows.

    Computed on the raw text at ingest, so later normalization or redaction keeps the id:
    a diff of two dataset versions sees such a row as changed, not removed and added.
    hashlib (not polars' hash) because polars' hash may change between versions.
    """
    frame = pl.DataFrame({"s": split, "i": inputs, "o": outputs})
    # n over the rows whose polars hash repeats only (the candidates; exact over their text):
    # a window over the three text columns of every row took twice the file's size in memory.
    candidates = frame.select(pl.struct("s", "i", "o").hash().is_duplicated()).to_series()
    repeats = frame.with_row_index("r").filter(candidates).select("r", n=pl.int_range(pl.len()).over(["s", "i", "o"]))
    n = pl.zeros(frame.height, dtype=pl.Int64, eager=True).scatter(repeats["r"], repeats["n"])
    frame = frame.with_columns(n=n)
    # A slice at a time: Python holds one slice's strings, not a list of them all (ingest's memory).
    parts = [
        pl.Series("row_id", [
            hashlib.sha256(f"{s}\x1f{i}\x1f{o}\x1f{n}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
            for s, i, o, n in part.iter_rows()
        ], dtype=pl.String)
        for part in frame.iter_slices(50_000)
    ]
    return pl.concat(parts) if parts else pl.Series("row_id", [], dtype=pl.String)


@dataclass
class StageCounts:
    """Per-stage accounting, as written into the manifest and the summary table."""

    stage: str
    rows_in: int
    kept: int
    filtered: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    by_split: dict[str, dict[str, int]] = field(default_factory=dict)

    def check(self) -> "StageCounts":
        out = self.kept + sum(self.filtered.values()) + sum(self.quarantined.values())
        if out != self.rows_in:
            raise AccountingError(
                f"stage {self.stage}: rows in {self.rows_in} != kept {self.kept} + filtered "
                f"{sum(self.filtered.values())} + quarantined {sum(self.quarantined.values())}"
            )
        return self

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "rows_in": self.rows_in,
            "kept": self.kept,
            "filtered": dict(sorted(self.filtered.items())),
            "quarantined": dict(sorted(self.quarantined.items())),
            "by_split": self.by_split,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "StageCounts":
        return cls(**data)


def count_stage(
    stage: str,
    rows_in: pl.DataFrame,
    kept: pl.DataFrame,
    dropped: pl.DataFrame | None = None,
    quarantined: pl.DataFrame | None = None,
) -> StageCounts:
    """Count a stage's outcome per reason and per split, and check nothing was lost."""
    dropped = dropped if dropped is not None else empty_dropped()
    quarantined = quarantined if quarantined is not None else empty_quarantine()
    by_split: dict[str, dict[str, int]] = {}
    for split in sorted(set(rows_in["split"].to_list()) | set(quarantined["split"].to_list())):
        by_split[split] = {
            "rows_in": rows_in.filter(pl.col("split") == split).height,
            "kept": kept.filter(pl.col("split") == split).height,
            "filtered": dropped.filter(pl.col("split") == split).height,
            "quarantined": quarantined.filter(pl.col("split") == split).height,
        }
    return StageCounts(
        stage=stage,
        rows_in=rows_in.height,
        kept=kept.height,
        filtered=dict(Counter(dropped["reason"].to_list())),
        quarantined=dict(Counter(quarantined["reason"].to_list())),
        by_split=by_split,
    ).check()


def split_dropped(df: pl.DataFrame, *, stage: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a frame with a `drop_reason` column (null = keep) into (kept, dropped).

    Optional columns `drop_detail`, `duplicate_of` and `cluster` are carried into the
    dropped rows; kept rows get back exactly the row schema's columns.
    """
    def col_or_null(name: str) -> pl.Expr:
        return pl.col(name) if name in df.columns else pl.lit(None, dtype=pl.String)

    kept = df.filter(pl.col("drop_reason").is_null()).select(ROW_COLUMNS)
    dropped = df.filter(pl.col("drop_reason").is_not_null()).select(
        *ROW_COLUMNS,
        pl.lit(stage).alias("stage"),
        pl.col("drop_reason").alias("reason"),
        col_or_null("drop_detail").cast(pl.String).alias("detail"),
        col_or_null("duplicate_of").cast(pl.String).alias("duplicate_of"),
        col_or_null("cluster").cast(pl.String).alias("cluster"),
    )
    return kept, dropped
