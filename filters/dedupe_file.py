"""Near-duplicate removal for one table file, outside the pipeline.

    curate dedupe data.jsonl --field text --out kept.jsonl --clusters clusters.parquet

Reads JSONL, CSV or Parquet (by extension, ``core.io``), runs ``filters.near_dup`` on
one text field and writes the kept rows unchanged (same columns, values and order) to
`out`. The optional `clusters` file has one row per input row:

    row           Int64    0-based position in the input
    cluster       Int64    smallest `row` of its cluster (a row without duplicates: its own row)
    kept          Boolean  the row is in `out`
    duplicate_of  id       the kept row's `id_field` value (or its `row` without id_field); null when kept
    linked_to     id       the row whose verified edge brought this row into the cluster; null when kept
    similarity    Float64  exact Jaccard of that edge (>= threshold); null when kept

Rows whose field is null or empty (no word characters) have no shingles: each is its own
cluster and is kept. Exact duplicates have identical shingle sets (Jaccard 1) and fall in
one cluster like any near-duplicate.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from core.io import read_table, write_table
from filters.near_dup import DEFAULTS, KeepPolicy, NearDupSettings, near_dup_clusters


def dedupe_file(
    input_path: str | Path,
    *,
    field: str,
    settings: NearDupSettings = DEFAULTS,
    keep: KeepPolicy = "earliest",
    out: str | Path,
    clusters: str | Path | None = None,
    id_field: str | None = None,
    label_field: str | None = None,
) -> dict:
    """Write the kept rows of `input_path` to `out` (and the per-row clusters table); return a summary.

    Summary keys: rows_in, kept, removed, clusters (clusters with 2+ rows), seconds.
    `label_field` is only needed for keep="most_common_label".
    """
    started = time.perf_counter()
    df = read_table(input_path)
    for name, col in (("field", field), ("id_field", id_field), ("label_field", label_field)):
        if col is not None and col not in df.columns:
            raise ValueError(f"{input_path}: {name} {col!r} is not a column; have {df.columns}")
    texts = df[field].cast(pl.String)  # CSV reads every column as text already
    labels = df[label_field] if label_field is not None else None
    res = near_dup_clusters(texts, settings, keep=keep, labels=labels)
    write_table(df.filter(pl.Series(res.kept)), out)

    n = df.height
    rows = pl.int_range(n, eager=True, dtype=pl.Int64)
    ids = df[id_field] if id_field is not None else rows
    kept = pl.Series("kept", res.kept, dtype=pl.Boolean)
    table = pl.DataFrame(
        {
            "row": rows,
            "cluster": pl.Series(res.cluster, dtype=pl.Int64),
            "kept": kept,
            "duplicate_of": ids.gather(res.keeper),
            "linked_to": ids.gather(res.linked_to.clip(0)),
            "similarity": pl.Series(res.similarity, dtype=pl.Float64).fill_nan(None),
        }
    ).with_columns(
        pl.when(pl.col("kept")).then(None).otherwise(pl.col(c)).alias(c) for c in ("duplicate_of", "linked_to")
    )
    if clusters is not None:
        write_table(table, clusters)
    n_kept = int(res.kept.sum())
    multi = table.group_by("cluster").len().filter(pl.col("len") > 1).height
    return {
        "rows_in": n,
        "kept": n_kept,
        "removed": n - n_kept,
        "clusters": multi,
        "seconds": round(time.perf_counter() - started, 3),
    }
