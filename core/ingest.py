"""Ingest: read raw sources into one typed row table; unusable records go to quarantine.

    rows, quarantine, counts = ingest(config)

Readers: JSONL (one object per line), CSV (RFC 4180, quoted newlines included, first
row is the header), Parquet, and a folder written by `datasets.Dataset.save_to_disk`.
A record is quarantined, with its source, line, reason and raw text, when it cannot
be used: reasons are stable snake_case strings (they become metrics):

    invalid_utf8, invalid_json, not_an_object, malformed_quote, wrong_field_count,
    missing_field, wrong_type, empty_text, empty_output, too_large, unknown_label,
    no_class

A whole-file problem (file missing, the configured column absent from a CSV header or
a Parquet schema or named twice in a CSV header, a file that is not Parquet, one larger
than `ingest.max_file_bytes`) is a configuration error and stops the run with the file
named.

JSONL and CSV files may be gzip, bzip2 or xz compressed (told by their first bytes, so
`messages.jsonl.gz` and a compressed `messages.jsonl` both read), and UTF-16 or UTF-32
with a byte-order mark (what spreadsheet programs export as "Unicode text").
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl

from core.config import Config, SourceConfig, resolve_path
from core.schema import (
    QUARANTINE_SCHEMA,
    ROW_COLUMNS,
    StageCounts,
    count_stage,
    empty_quarantine,
    row_ids,
)

BOM = "\ufeff"
# Raw text kept in quarantine rows is capped so a 10 MB field cannot bloat the table;
# the source and line still point at the full record.
MAX_RAW_CHARS = 4096


class IngestError(RuntimeError):
    """A source cannot be read at all (missing file, configured field absent)."""


@dataclass
class _Records:
    """What a reader produced: parsed records and quarantined ones."""

    lines: list[int]
    values: list[tuple[object, object]]  # (input, output) as found, any type; missing = _MISSING
    quarantine: list[tuple[int, str, str, str]]  # (line, reason, detail, raw)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


# Compressed files, told by their first bytes (the name may or may not say .gz).
_COMPRESSED = ((b"\x1f\x8b", "gzip", gzip.open), (b"BZh", "bzip2", bz2.open), (b"\xfd7zXZ\x00", "xz", lzma.open))
_ZSTD = b"\x28\xb5\x2f\xfd"
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
# Byte-order marks of the wide Unicode encodings (UTF-32 first: its LE mark starts with UTF-16's).
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def read_input_bytes(path: Path, max_bytes: int) -> bytes:
    """A text source's bytes, decompressed and in UTF-8 where they were UTF-16/32 with a BOM.

    A file (after decompression) larger than max_bytes, one that does not decompress,
    or one in a wide encoding that does not decode is an IngestError naming it.
    """
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head.startswith(_ZSTD):
        raise IngestError(f"{path}: the file is zstd-compressed; decompress it, or compress it with gzip, bzip2 or xz")
    kind = next(((name, opener) for magic, name, opener in _COMPRESSED if head.startswith(magic)), None)
    if kind is None:
        size = path.stat().st_size
        if size > max_bytes:
            raise IngestError(f"{path}: {size:,} bytes, more than ingest.max_file_bytes ({max_bytes:,}); split the file or raise the bound")
        data = path.read_bytes()
    else:
        name, opener = kind
        try:
            with opener(path, "rb") as fh:
                data = fh.read(max_bytes + 1)  # never more than the bound, whatever the file expands to
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise IngestError(f"{path}: {name}-compressed, but it does not decompress: {exc}") from exc
        if len(data) > max_bytes:
            raise IngestError(f"{path}: decompresses to more than ingest.max_file_bytes ({max_bytes:,}); split the file or raise the bound")
    wide = next((enc for bom, enc in _WIDE_BOMS if data.startswith(bom)), None)
    if wide is not None:
        try:
            data = data.decode(wide).encode("utf-8")  # the codec reads the BOM for the byte order and drops it
        except (UnicodeDecodeError, UnicodeEncodeError) as exc:
            raise IngestError(f"{path}: starts with a {wide.upper()} byte-order mark but is not valid {wide.upper()}: {exc.reason}") from exc
    return data


def _decode(data: bytes) -> tuple[str, bool]:
    """Decode UTF-8, keeping undecodable bytes as surrogates so they can be located per line."""
    try:
        text = data.decode("utf-8")
        clean = True
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape")
        clean = False
    if text.startswith(BOM):
        text = text[1:]
    return text, clean


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _printable(raw: str) -> str:
    """Raw text made safe to store: undecodable bytes become U+FFFD, length capped."""
    fixed = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return fixed if len(fixed) <= MAX_RAW_CHARS else fixed[:MAX_RAW_CHARS] + f"... [{len(fixed)} chars]"


# How often (in records) a reader reports progress.
TICK = 50_000


def read_jsonl(path: Path, input_field: str, output_field: str, tick=None, *, max_bytes: int = 2**62) -> _Records:
    text, clean = _decode(read_input_bytes(path, max_bytes))
    rec = _Records([], [], [])
    if "\r" in text:  # CRLF, LF and a bare CR all end a line (JSON text cannot hold a raw CR)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if tick is not None:
        tick(0, len(lines))
    for lineno, line in enumerate(lines, start=1):
        if tick is not None and lineno % TICK == 0:
            tick(TICK, None)
        if not line.strip():
            continue  # blank lines carry no record
        if not clean and _has_surrogates(line):
            rec.quarantine.append((lineno, "invalid_utf8", "bytes that are not UTF-8", _printable(line)))
            continue
        try:
            obj = orjson.loads(line)  # 3x faster than json.loads; the same JSON grammar
        except orjson.JSONDecodeError as exc:
            rec.quarantine.append((lineno, "invalid_json", f"{exc.msg} (column {exc.colno})", _printable(line)))
            continue
        if not isinstance(obj, dict):
            rec.quarantine.append((lineno, "not_an_object", f"a JSON {type(obj).__name__} where an object was expected", _printable(line)))
            continue
        rec.lines.append(lineno)
        rec.values.append((obj.get(input_field, _MISSING), obj.get(output_field, _MISSING)))
    return rec


# RFC 4180, strictly: a quoted field opens at the field's start and closes right before a
# delimiter, a line end or the end of the file, with doubled quotes inside it; an unquoted
# field holds no quote. Possessive repeats: a field that does not close fails in one pass.
_QUOTED = re.compile(r'"((?:[^"]|"")*+)"(?=,|\n|\Z)')
_UNQUOTED = re.compile(r'[^,"\n]*+(?=,|\n|\Z)')


class _MalformedQuote(ValueError):
    """A quote where RFC 4180 allows none; the message says where."""


def parse_csv_record(text: str, pos: int) -> tuple[list[str], int]:
    """The fields of the CSV record starting at `pos` and the position after its line end.

    Raises _MalformedQuote for a quoted field that never closes, a closing quote followed by
    anything but a delimiter or a line end, or a quote inside an unquoted field. A line
    without a quote is split directly (most lines of most files).
    """
    end = text.find("\n", pos)
    end = len(text) if end < 0 else end
    if text.find('"', pos, end) < 0:
        return text[pos:end].split(","), end + 1
    fields: list[str] = []
    while True:
        if text.startswith('"', pos):
            m = _QUOTED.match(text, pos)
            if m is None:
                close = text.find('"', pos + 1)
                raise _MalformedQuote("a quoted field never closes" if close < 0 else
                                      "a quoted field closes, then text follows before the next delimiter")
            fields.append(m.group(1).replace('""', '"'))
        else:
            m = _UNQUOTED.match(text, pos)
            if m is None:
                raise _MalformedQuote("a quote inside an unquoted field")
            fields.append(m.group(0))
        pos = m.end()
        if pos >= len(text) or text[pos] == "\n":
            return fields, pos + 1
        pos += 1  # the delimiter


def read_csv(path: Path, input_field: str, output_field: str, tick=None, *, max_bytes: int = 2**62) -> _Records:
    """RFC 4180 CSV, strictly (parse_csv_record); the line of each record is the line it starts on.

    A record with a quote RFC 4180 does not allow is quarantined as `malformed_quote` with its
    first line, and parsing resumes on the next line: a record that starts there well-formed
    is kept, so one stray quote never merges two records into one, nor swallows the rows
    after it. Quoted newlines, commas and doubled quotes are fields' text as usual.
    """
    text, clean = _decode(read_input_bytes(path, max_bytes))
    rec = _Records([], [], [])
    # Mixed line endings (CRLF, LF, a bare CR) all end a line; only "\n" splits, so that
    # U+2028 and form feeds inside a field stay text, as in an editor's line count.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.endswith("\n"):
        text = text[:-1]  # the file's final newline ends the last line; it starts none
    if not text:
        return rec
    if tick is not None:
        tick(0, text.count("\n") + 1)
    try:
        header, pos = parse_csv_record(text, 0)
    except _MalformedQuote as exc:
        raise IngestError(f"{path}: cannot read the CSV header: {exc}") from exc
    missing = [f for f in (input_field, output_field) if f not in header]
    if missing:
        raise IngestError(f"{path}: column(s) {missing} not in the CSV header {header}")
    twice = [f for f in dict.fromkeys((input_field, output_field)) if header.count(f) > 1]
    if twice:
        raise IngestError(f"{path}: column(s) {twice} appear more than once in the CSV header {header}; which one to read is ambiguous")
    i_in, i_out, width = header.index(input_field), header.index(output_field), len(header)
    line = text.count("\n", 0, pos) + 1  # 1-based line at `pos`
    reported = 0
    while pos <= len(text):
        if tick is not None and line // TICK != reported // TICK:
            tick(line - reported, None)
            reported = line
        try:
            fields, after = parse_csv_record(text, pos)
        except _MalformedQuote as exc:  # quarantine the record's first line; resume on the next one
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            rec.quarantine.append((line, "malformed_quote", str(exc), _printable(text[pos:end])))
            pos, line = end + 1, line + 1
            continue
        start, raw = line, text[pos:after - 1]
        pos, line = after, line + text.count("\n", pos, after)
        if fields == [""]:
            continue  # blank line
        if not clean and _has_surrogates(raw):
            rec.quarantine.append((start, "invalid_utf8", "bytes that are not UTF-8", _printable(raw)))
            continue
        if len(fields) != width:
            rec.quarantine.append((start, "wrong_field_count", f"{len(fields)} fields, header has {width}", _printable(raw)))
            continue
        rec.lines.append(start)
        rec.values.append((fields[i_in], fields[i_out]))
    return rec


def _records_from_frame(df: pl.DataFrame, path: Path, input_field: str, output_field: str) -> _Records:
    missing = [f for f in (input_field, output_field) if f not in df.columns]
    if missing:
        raise IngestError(f"{path}: column(s) {missing} not in {df.columns}")
    rec = _Records([], [], [])
    for n, (a, b) in enumerate(zip(df[input_field].to_list(), df[output_field].to_list()), start=1):
        rec.lines.append(n)
        rec.values.append((a, b))
    return rec


def read_parquet(path: Path, input_field: str, output_field: str) -> _Records:
    try:
        df = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise IngestError(f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}") from exc
    return _records_from_frame(df, path, input_field, output_field)


def read_hf(path: Path, input_field: str, output_field: str, split: str | None) -> _Records:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise IngestError(f"{path}: not a dataset folder written by datasets' save_to_disk: {str(exc).splitlines()[0]}") from exc
    if isinstance(ds, datasets.DatasetDict):
        if split is None or split not in ds:
            raise IngestError(f"{path}: a DatasetDict with splits {list(ds)}; set hf_split to one of them")
        ds = ds[split]
    # ClassLabel columns hold integers: turn them into their names, the way users think of them.
    for name in (input_field, output_field):
        feature = ds.features.get(name)
        if isinstance(feature, datasets.ClassLabel):
            ds = ds.cast_column(name, datasets.Value("string"))
            ds = ds.map(lambda r, f=feature, c=name: {c: f.int2str(int(r[c]))})
    return _records_from_frame(pl.from_arrow(ds.data.table), path, input_field, output_field)


def source_format(source: SourceConfig, path: Path) -> str:
    if source.format != "auto":
        return source.format
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    if suffix in COMPRESSED_SUFFIXES:  # messages.jsonl.gz is JSONL
        suffix = Path(path.stem).suffix.lower()
    formats = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
    if suffix not in formats:
        raise IngestError(f"{source.path}: cannot tell the format from {suffix!r}; set format: jsonl|csv|parquet|hf")
    return formats[suffix]


def read_source(source: SourceConfig, input_field: str, output_field: str, root: Path | None = None, tick=None,
                *, max_bytes: int = 2**62) -> _Records:
    path = resolve_path(source.path, root)
    if not path.exists():
        raise IngestError(f"{source.path}: no such file or folder")
    fmt = source_format(source, path)
    if fmt == "jsonl":
        return read_jsonl(path, input_field, output_field, tick, max_bytes=max_bytes)
    if fmt == "csv":
        return read_csv(path, input_field, output_field, tick, max_bytes=max_bytes)
    if fmt == "parquet":
        return read_parquet(path, input_field, output_field)
    return read_hf(path, input_field, output_field, source.hf_split)


def _type_problem(value: object, field: str) -> tuple[str, str] | None:
    if value is _MISSING or value is None:
        return "missing_field", f"{field} is missing or null"
    if not isinstance(value, str):
        return "wrong_type", f"{field} has type {type(value).__name__}, not string"
    return None


def _to_frame(rec: _Records, split: str, source: str, input_field: str, output_field: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Typed rows and quarantined records of one source (type checks only)."""
    good_lines, inputs, outputs, bad = [], [], [], list(rec.quarantine)
    for line, (a, b) in zip(rec.lines, rec.values):
        problem = _type_problem(a, input_field) or _type_problem(b, output_field)
        if problem:
            raw = json.dumps({input_field: None if a is _MISSING else a, output_field: None if b is _MISSING else b}, default=str, ensure_ascii=False)
            bad.append((line, problem[0], problem[1], _printable(raw)))
            continue
        if _has_surrogates(a) or _has_surrogates(b):
            bad.append((line, "invalid_utf8", "bytes that are not UTF-8", _printable(a + " | " + b)))
            continue
        good_lines.append(line)
        inputs.append(a)
        outputs.append(b)
    rows = pl.DataFrame(
        {"split": split, "source": source, "line": good_lines, "input": inputs, "output": outputs},
        schema={"split": pl.String, "source": pl.String, "line": pl.Int64, "input": pl.String, "output": pl.String},
    )
    quarantine = pl.DataFrame(
        [(split, source, line, reason, detail, raw) for line, reason, detail, raw in bad],
        schema=QUARANTINE_SCHEMA,
        orient="row",
    )
    return rows, quarantine


def validate_rows(
    rows: pl.DataFrame,
    *,
    max_field_bytes: int,
    labels: list[str] | None,
    kind: str,
    class_pattern: str | None,
) -> pl.DataFrame:
    """Add `label` and a `drop_reason` (null = usable) to freshly read rows.

    Input columns: input, output. Output columns: label, drop_reason, drop_detail.
    """
    if kind == "classification":
        label = pl.col("output").str.strip_chars()
    else:
        label = pl.col("output").str.strip_chars().str.extract(class_pattern, 1)
    df = rows.with_columns(label=label)
    reason = (
        pl.when(pl.col("input").str.len_bytes() > max_field_bytes).then(pl.lit("too_large"))
        .when(pl.col("output").str.len_bytes() > max_field_bytes).then(pl.lit("too_large"))
        .when(pl.col("input").str.strip_chars().str.len_chars() == 0).then(pl.lit("empty_text"))
        .when(pl.col("output").str.strip_chars().str.len_chars() == 0).then(pl.lit("empty_output"))
        .when(pl.col("label").is_null()).then(pl.lit("no_class"))
    )
    if labels is not None:
        reason = reason.when(~pl.col("label").is_in(labels)).then(pl.lit("unknown_label"))
    detail = (
        pl.when(pl.col("drop_reason") == "too_large")
        .then(pl.format("input {} bytes, output {} bytes, bound {}", pl.col("input").str.len_bytes(), pl.col("output").str.len_bytes(), pl.lit(max_field_bytes)))
        .when(pl.col("drop_reason") == "unknown_label")
        .then(pl.format("label '{}' is not one of the task's classes", pl.col("label")))
        .when(pl.col("drop_reason") == "no_class")
        .then(pl.lit("the output does not match task.class_pattern"))
    )
    return df.with_columns(drop_reason=reason.otherwise(None)).with_columns(drop_detail=detail)


def ingest(config: Config, *, root: Path | None = None, progress=None) -> tuple[pl.DataFrame, pl.DataFrame, StageCounts]:
    """Read every train and eval source of `config`.

    Returns (rows, quarantine, counts): rows follow the row schema (core.schema),
    quarantine holds every record that could not be used, with its reason.
    `progress(source, advance, total)` is called as records are read (total once per source).
    """
    labels = config.label_set(root)
    task = config.task
    frames, quarantines = [], []
    sources = [("train", s) for s in config.data.train] + [("eval", s) for s in config.data.eval]
    for split, source in sources:
        tick = None if progress is None else (lambda advance, total, p=source.path: progress(p, advance, total))
        config.read_path(source.path, root)  # inside the project, symlinks followed (unless allowed)
        rec = read_source(source, task.input_field, task.output_field, root, tick, max_bytes=config.ingest.max_file_bytes)
        rows, quarantine = _to_frame(rec, split, source.path, task.input_field, task.output_field)
        frames.append(rows)
        quarantines.append(quarantine)
    raw = pl.concat(frames) if frames else pl.DataFrame(schema={"split": pl.String})
    checked = validate_rows(
        raw,
        max_field_bytes=config.ingest.max_field_bytes,
        labels=labels,
        kind=task.kind,
        class_pattern=task.class_pattern,
    )
    bad = checked.filter(pl.col("drop_reason").is_not_null()).select(
        "split", "source", "line",
        pl.col("drop_reason").alias("reason"),
        pl.col("drop_detail").fill_null("").alias("detail"),
        pl.concat_str([pl.col("input"), pl.col("output")], separator=" | ")
        .map_elements(_printable, return_dtype=pl.String).alias("raw"),
    )
    good = checked.filter(pl.col("drop_reason").is_null())
    good = good.with_columns(
        row_id=row_ids(good["split"], good["input"], good["output"]),
        pii=pl.lit([], dtype=pl.List(pl.String)),
        synthetic=pl.lit(False),
    ).select(ROW_COLUMNS)
    quarantine = pl.concat([*quarantines, bad]) if quarantines else empty_quarantine()
    quarantine = quarantine.sort(["split", "source", "line"], descending=[True, False, False], maintain_order=True)
    total_in = pl.concat([good.select("split"), quarantine.select("split")])
    counts = count_stage("ingest", total_in, good, quarantined=quarantine)
    return good, quarantine, counts
