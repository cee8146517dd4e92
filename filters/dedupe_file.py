"""Near-duplicate removal for one table file, outside the pipeline.

    curate dedupe data.jsonl --field text --out kept.jsonl --clusters clusters.parquet

Reads JSONL, CSV or Parquet (by extension, ``core.io``), runs ``filters.near_dup`` on
one text field and writes the kept rows, in their order, to `out`, unchanged: a JSONL or
CSV input written to the same format is the input's own lines (records) byte for byte,
line ends, spacing and number spellings included; a Parquet one has the same schema and
values. Written to another format, rows are converted as polars writes that format.
The optional `clusters` file has one row per input row:

    row           Int64    0-based position in the input (blank lines are not rows)
    cluster       Int64    smallest `row` of its cluster (a row without duplicates: its own row)
    kept          Boolean  the row is in `out`
    duplicate_of  id       the kept row's `id_field` value (or its `row` without id_field); null when kept
    linked_to     id       the row whose verified edge brought this row into the cluster; null when kept
    similarity    Float64  exact Jaccard of that edge (>= threshold); null when kept

Ids of one JSON type keep it; ids of mixed types (`1` and `"b"`) are written as their
JSON text. A field value that is not a string is compared as its JSON text (`42`).
Rows whose field is null or empty (no word characters) have no shingles: each is its
own cluster and is kept. Exact duplicates have identical shingle sets (Jaccard 1) and
fall in one cluster like any near-duplicate.

Nothing is written over the data: an output that is the input, or the clusters file
that is the kept rows' output (the same path, through a symlink or a hard link too), is
refused before anything is read. A file that cannot be read as a whole (a line that is
not JSON or not an object, bytes that are not UTF-8, a CSV quote RFC 4180 does not
allow or a record with the wrong number of fields, no records at all) is a ValueError
naming the file and every such line; nothing is written. The lines are read as ingest
reads them (core.ingest: compression, byte-order marks, the strict CSV parser).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl

from core.config import IngestConfig
from core.ingest_csv import parse_csv_record
from core.ingest_files import IngestError, read_input_bytes
from core.io import atomic_path, table_format, write_table
from filters.near_dup import DEFAULTS, KeepPolicy, NearDupSettings, near_dup_clusters

BOM = "\ufeff"
_LINE_END = re.compile(r"(\r\n|\r|\n)")  # what ends a line for ingest too (not U+2028, not a form feed)
MAX_LISTED = 10  # unreadable lines named in one error
MAX_FILE_BYTES = IngestConfig().max_file_bytes  # the pipeline's default bound on one input file


@dataclass
class _Rows:
    """An input as dedupe uses it: the columns, each row's values, and how to write kept rows back.

    `raw[i]` is row i's text as read (JSONL, CSV: its lines with their line ends), `head`
    what precedes the rows (a byte-order mark, the CSV header's lines); Parquet has
    `frame` instead.
    """

    columns: list[str]
    values: list  # JSONL: dicts; CSV: lists of fields; Parquet: unused
    raw: list[str] | None = None
    head: str = ""
    frame: pl.DataFrame | None = None

    @property
    def height(self) -> int:
        return self.frame.height if self.frame is not None else len(self.values)

    def column(self, name: str) -> list:
        if self.frame is not None:
            return self.frame[name].to_list()
        if isinstance(self.values[0] if self.values else {}, dict):
            return [v.get(name) for v in self.values]
        i = self.columns.index(name)
        return [v[i] for v in self.values]

    def to_frame(self) -> pl.DataFrame:
        if self.frame is not None:
            return self.frame
        if self.values and isinstance(self.values[0], dict):
            return pl.from_dicts(self.values, infer_schema_length=None)
        return pl.DataFrame([list(col) for col in zip(*self.values)] if self.values else [[] for _ in self.columns],
                            schema={c: pl.String for c in self.columns}, orient="col")


def _lines(text: str) -> list[str]:
    """Physical lines, each with its own line end (CRLF, LF or a bare CR); the last may have none."""
    parts = _LINE_END.split(text)
    lines = [body + end for body, end in zip(parts[::2], parts[1::2])]
    return lines + [parts[-1]] if parts[-1] else lines


def _text(path: Path) -> tuple[str, str]:
    """The file's text as ingest reads it (decompressed, UTF-16/32 made UTF-8; bytes that are not
    UTF-8 kept as surrogates to be named by line) and the byte-order mark it started with."""
    try:
        data = read_input_bytes(path, MAX_FILE_BYTES)
    except IngestError as exc:
        raise ValueError(str(exc)) from None
    text = data.decode("utf-8", errors="surrogateescape")
    return (text[1:], BOM) if text.startswith(BOM) else (text, "")


def _not_utf8(line: str) -> bool:
    try:
        line.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _refuse(path: Path, problems: list[tuple[int, str]]) -> None:
    if problems:
        listed = [f"  line {line}: {what}" for line, what in problems[:MAX_LISTED]]
        more = [f"  ... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        raise ValueError("\n".join([f"{path}: {len(problems)} line(s) cannot be read; nothing was written:", *listed, *more]))


def _read_jsonl(path: Path) -> _Rows:
    text, bom = _text(path)
    records, raw, problems, columns = [], [], [], {}
    for lineno, line in enumerate(_lines(text), start=1):
        body = line.rstrip("\r\n")
        if not body.strip():
            continue  # blank lines carry no record (as in ingest)
        if _not_utf8(body):
            problems.append((lineno, "bytes that are not UTF-8"))
            continue
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            problems.append((lineno, f"not valid JSON: {exc.msg} (column {exc.colno})"))
            continue
        if not isinstance(obj, dict):
            problems.append((lineno, f"not a JSON object (a JSON {type(obj).__name__})"))
            continue
        columns.update(dict.fromkeys(obj))
        records.append(obj)
        raw.append(line)
    _refuse(path, problems)
    return _Rows(list(columns), records, raw, bom)


def _read_csv(path: Path) -> _Rows:
    """RFC 4180 records by ingest's parser, each kept as its original lines (a quoted line break stays a line)."""
    text, bom = _text(path)
    lines = _lines(text)
    norm = text.replace("\r\n", "\n").replace("\r", "\n")  # one "\n" per line end: line numbers match `lines`
    if norm.endswith("\n"):
        norm = norm[:-1]
    if not norm.strip():
        return _Rows([], [], [], bom)
    problems: list[tuple[int, str]] = []
    try:
        header, pos = parse_csv_record(norm, 0)
    except ValueError as exc:  # core.ingest_csv's _MalformedQuote
        raise ValueError(f"{path}: line 1: cannot read the CSV header: {exc}") from None
    span = norm.count("\n", 0, pos - 1) + 1
    head, line = bom + "".join(lines[:span]), span + 1
    rows, raw = [], []
    while pos <= len(norm):
        try:
            fields, after = parse_csv_record(norm, pos)
        except ValueError as exc:  # resume on the next line, to name every bad record
            problems.append((line, str(exc)))
            end = norm.find("\n", pos)
            pos, line = (len(norm) + 1 if end < 0 else end + 1), line + 1
            continue
        span = norm.count("\n", pos, after - 1) + 1
        record, start = lines[line - 1:line - 1 + span], line
        pos, line = after, line + span
        if fields == [""]:
            continue  # a blank line
        if _not_utf8("".join(record)):
            problems.append((start, "bytes that are not UTF-8"))
        elif len(fields) != len(header):
            problems.append((start, f"{len(fields)} fields, the header has {len(header)}"))
        else:
            rows.append(fields)
            raw.append("".join(record))
    _refuse(path, problems)
    return _Rows(header, rows, raw, head)


def _read(path: Path) -> _Rows:
    fmt = table_format(path)
    if fmt == "parquet":
        try:
            df = pl.read_parquet(path, glob=False)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise ValueError(f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}") from None
        return _Rows(df.columns, [], frame=df)
    rows = _read_jsonl(path) if fmt == "jsonl" else _read_csv(path)
    if not rows.columns:
        raise ValueError(f"{path}: no records (the file is empty or holds only blank lines); nothing to dedupe")
    return rows


def _as_text(values: list) -> pl.Series:
    """Values compared or grouped as text: strings as they are, anything else as its JSON text."""
    return pl.Series([v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values], dtype=pl.String)


def _ids(values: list) -> pl.Series:
    """Ids as a column: of their own type when they share one, else as JSON text (1 stays 1, never 1.0)."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1 and kinds <= {str, int, float, bool}:
        return pl.Series(values)
    return _as_text(values)


def _same(a: Path, b: Path) -> bool:
    """One file under two names: the same resolved path (symlinks followed), or a hard link of it."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is not there yet
        return False


def _check_outputs(input_path: Path, out: Path, clusters: Path | None) -> None:
    """Refuse an output that is the input, or the clusters file that is the kept rows' output (or a folder)."""
    for path, what in ((out, "the output"), (clusters, "the clusters file")):
        if path is not None and path.is_dir():
            raise ValueError(f"{what} {path} is a folder; name a file")
        if path is not None and _same(path, input_path):
            raise ValueError(f"{what} {path} is the input {input_path}: writing it would replace the data being deduped;"
                             " write somewhere else")
    if clusters is not None and _same(clusters, out):
        raise ValueError(f"the clusters file {clusters} is the kept rows' output {out}: one would overwrite the other")


def _write_kept(rows: _Rows, kept: list[bool], input_fmt: str, out: Path) -> None:
    if rows.raw is not None and table_format(out) == input_fmt:
        with atomic_path(out) as tmp:  # the rows as read (UTF-8: a compressed or UTF-16 input is written as ingest reads it)
            tmp.write_bytes((rows.head + "".join(r for r, k in zip(rows.raw, kept) if k)).encode("utf-8", "surrogateescape"))
        return
    try:
        write_table(rows.to_frame().filter(pl.Series(kept, dtype=pl.Boolean)), out)
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        raise ValueError(f"{out}: the kept rows cannot be written as {table_format(out)}: {str(exc).splitlines()[0]};"
                         f" write them as .{input_fmt} to keep them as they are") from None


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
    input_path, out = Path(input_path), Path(out)
    clusters = Path(clusters) if clusters is not None else None
    fmt = table_format(input_path)
    for path in (out, clusters):
        if path is not None:
            table_format(path)  # an unknown extension fails before any work
    _check_outputs(input_path, out, clusters)
    rows = _read(input_path)
    for name, col in (("field", field), ("id_field", id_field), ("label_field", label_field)):
        if col is not None and col not in rows.columns:
            raise ValueError(f"{input_path}: {name} {col!r} is not a column; have {rows.columns}")
        if col is not None and rows.columns.count(col) > 1:
            raise ValueError(f"{input_path}: {name} {col!r} is named more than once in the CSV header; which one to read is ambiguous")
    texts, labels = _as_text(rows.column(field)), _as_text(rows.column(label_field)) if label_field is not None else None
    res = near_dup_clusters(texts, settings, keep=keep, labels=labels)
    _write_kept(rows, res.kept.tolist(), fmt, out)

    n = rows.height
    positions = pl.int_range(n, eager=True, dtype=pl.Int64)
    if id_field is None:
        ids = positions
    else:  # Parquet ids keep their column's type
        ids = rows.frame[id_field] if rows.frame is not None else _ids(rows.column(id_field))
    table = pl.DataFrame(
        {
            "row": positions,
            "cluster": pl.Series(res.cluster, dtype=pl.Int64),
            "kept": pl.Series("kept", res.kept, dtype=pl.Boolean),
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
