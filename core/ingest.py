"""Ingest: read raw sources into one typed row table; unusable records go to quarantine.

    rows, quarantine, counts = ingest(config)

Readers: JSONL (one object per line; a file holding a JSON array of objects, as `.json`
exports do, reads each element as a record), CSV (RFC 4180, quoted newlines included,
first row is the header), Parquet, and a folder written by `datasets.Dataset.save_to_disk`.
A record is quarantined, with its source, line, reason and raw text, when it cannot
be used: reasons are stable snake_case strings (they become metrics):

    invalid_utf8, invalid_json, not_an_object, duplicate_key, malformed_quote,
    wrong_field_count, repeated_header, missing_field, wrong_type, no_label,
    empty_text, empty_output, too_large, unknown_label, no_class

A whole-file problem (file missing, not a regular file, the configured column absent
from a CSV header or a Parquet schema or named twice in a CSV header, a file that is not
Parquet, one larger than `ingest.max_file_bytes`, a compressed file that does not
decompress to its end) is a configuration error and stops the run with the file named,
as is running out of memory: records are parsed `ingest.batch_records` at a time and
memory is checked after each batch against `ingest.max_memory_mb` (_MemoryBound).

JSONL and CSV files may be gzip, bzip2 or xz compressed (told by their first bytes, so
`messages.jsonl.gz` and a compressed `messages.jsonl` both read), and UTF-16 or UTF-32,
with a byte-order mark (what spreadsheet programs export as "Unicode text") or without
one (told by where the NUL bytes fall). Labels are compared in one spelling
(core.schema.label_expr); a classification row's output is its label in that spelling.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl

from core.config import Config, SourceConfig, resolve_path
from core.devices import address_space_limit, memory_headroom_bytes, rss_bytes, vms_bytes
from core.ingest_csv import read_csv
from core.ingest_files import (
    BATCH,
    BOM,
    COMPRESSED_SUFFIXES,
    TICK,
    IngestError,
    Records,
    decode_text,
    has_surrogates,
    open_regular,
    printable,
    read_input_bytes,
)
from core.schema import (
    INVISIBLE,
    QUARANTINE_SCHEMA,
    ROW_COLUMNS,
    StageCounts,
    count_stage,
    empty_quarantine,
    label_expr,
    normalize_labels,
    row_ids,
)

__all__ = ["IngestError", "ingest", "read_jsonl", "read_source"]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


@dataclass(frozen=True)
class _NoLabel:
    """A ClassLabel value that names no class (datasets marks an unlabeled row -1, or None)."""

    value: object


def _repeated_task_keys(raw: str | bytes, keys: dict[str, str] | dict[str, bytes]) -> str | None:
    """Which task fields a JSON object gives more than once, as a detail (None: none).

    The parser keeps the last value, so the first would be lost without a word; which one
    the user meant cannot be told. `keys` maps each field to its JSON spelling: a line
    holding that spelling once cannot repeat it (the cheap test most lines stop at). A key
    written with escapes (`"t\\u0065xt"`) is not looked for.
    """
    if all(raw.count(spelled) < 2 for spelled in keys.values()):
        return None
    top: list[list[tuple[str, object]]] = [[]]

    def hook(pairs: list[tuple[str, object]]) -> dict:
        top[0] = pairs  # objects close innermost first: the last one is the record itself
        return {}

    try:
        json.loads(raw, object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return None
    counts = Counter(key for key, _ in top[0])
    twice = [f"{field!r} given {counts[field]} times" for field in keys if counts[field] > 1]
    return ", ".join(twice) + "; which value is meant is ambiguous" if twice else None


def _json_keys(input_field: str, output_field: str) -> dict[str, str]:
    return {f: orjson.dumps(f).decode() for f in dict.fromkeys((input_field, output_field))}


_BOM_BYTES = BOM.encode()


def _lines(data: bytes):
    """The lines of `data` ("\n" ends one), one at a time: no list of them all is built."""
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        yield data[start:end]
        start = end + 1
    yield data[start:]


def read_jsonl(path: Path, input_field: str, output_field: str, tick=None, *, max_bytes: int = 2**62,
               batch: int = BATCH) -> Iterator[Records]:
    """JSON Lines, one object a line; a file holding one JSON array reads as _read_json_array.

    Read as bytes, a line at a time (orjson parses UTF-8 bytes and refuses what is not UTF-8),
    so the file is held once, not also as text and as a list of lines: a line is decoded only
    to be quarantined or when it fails to parse.
    """
    data = read_input_bytes(path, max_bytes)
    if _is_json_array(data):
        text, clean = decode_text(data)
        del data
        yield from _read_json_array(text, clean, input_field, output_field, tick, batch=batch)
        return
    rec = Records()
    keys = {field: spelled.encode() for field, spelled in _json_keys(input_field, output_field).items()}
    if b"\r" in data:  # CRLF, LF and a bare CR all end a line (JSON text cannot hold a raw CR)
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if tick is not None:
        tick(0, data.count(b"\n") + 1)
    for lineno, line in enumerate(_lines(data), start=1):
        if tick is not None and lineno % TICK == 0:
            tick(TICK, None)
        if len(rec) >= batch:
            yield rec
            rec = Records()
        while line.startswith(_BOM_BYTES):
            line = line[3:]  # a file's byte-order mark, or a second file's where files were concatenated
        if not line.strip():
            continue  # blank lines carry no record
        try:
            obj = orjson.loads(line)  # 3x faster than json.loads; the same JSON grammar
        except orjson.JSONDecodeError as exc:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                rec.quarantine.append((lineno, "invalid_utf8", "bytes that are not UTF-8", printable(line.decode("utf-8", "surrogateescape"))))
                continue
            if text.strip():  # (a line of Unicode spaces only is blank too)
                rec.quarantine.append((lineno, "invalid_json", f"{exc.msg} (column {exc.colno})", printable(text)))
            continue
        if not isinstance(obj, dict):
            rec.quarantine.append((lineno, "not_an_object", f"a JSON {type(obj).__name__} where an object was expected",
                                   printable(line.decode("utf-8"))))
            continue
        repeated = _repeated_task_keys(line, keys)
        if repeated:
            rec.quarantine.append((lineno, "duplicate_key", repeated, printable(line.decode("utf-8"))))
            continue
        rec.lines.append(lineno)
        rec.values.append((obj.get(input_field, _MISSING), obj.get(output_field, _MISSING)))
    yield rec


_WS = re.compile(r"[ \t\n\r]*")  # JSON's whitespace
_LEAD = re.compile(rb"(?:[ \t\n\r]|\xef\xbb\xbf)*")  # JSON's whitespace and byte-order marks, as bytes


def _is_json_array(data: bytes) -> bool:
    """Whether the file is one JSON array (`[` first) rather than JSON Lines whose first record is an array."""
    start = _LEAD.match(data).end()
    if not data.startswith(b"[", start):
        return False
    end = data.find(b"\n", start)
    if end < 0 or not data[end:].strip():
        return True  # one line in all: the array
    try:
        orjson.loads(data[start:end])
    except orjson.JSONDecodeError:
        return True  # the first line does not close it: a multi-line array
    return False


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # as orjson refuses NaN and Infinity in JSON Lines


_ELEMENT_START = "{[\"-0123456789tfn"  # the characters a JSON value can start with


def _resync(text: str, pos: int, decoder: json.JSONDecoder) -> int:
    """Where the element after a broken one at `pos` starts: the next line that starts a value at
    the broken element's indentation (json.dump(indent=...) and one-record-a-line arrays are
    written so; an element's inner lines are deeper and its closing brace starts no value), or
    the end when the broken element shares its line with others. A line starting an object is
    taken as is (two broken records in a row stay two); any other value must parse, so a line
    a stray quote starts (`  "  "text": ...`) is still the broken element's."""
    start = text.rfind("\n", 0, pos) + 1
    prefix = text[start:pos]
    indent = prefix[:len(prefix) - len(prefix.lstrip(" \t"))]
    if prefix.strip() not in ("", "[", ","):
        return len(text)
    for found in re.compile("\n" + re.escape(indent) + "[" + re.escape(_ELEMENT_START) + "]").finditer(text, pos):
        at = found.end() - 1
        if text[at] == "{" or _parses_as_element(text, at, decoder):
            return at
    return len(text)


def _parses_as_element(text: str, pos: int, decoder: json.JSONDecoder) -> bool:
    try:
        _, end = decoder.raw_decode(text, pos)
    except (ValueError, RecursionError):
        return False
    after = _WS.match(text, end).end()
    return after >= len(text) or text[after] in ",]"


def _read_json_array(text: str, clean: bool, input_field: str, output_field: str, tick=None, *,
                     batch: int = BATCH) -> Iterator[Records]:
    """A JSON array of records. `line` is an element's 1-based position in the array (as a
    Parquet row number: in a one-line export every element is on line 1); a quarantined
    element's detail also gives its text line.

    A broken element is quarantined alone and parsing resumes at the next element that
    starts its own line (_resync); in a one-line array the rest of it is one quarantined
    record, as where its records begin cannot be told. A missing `]` at the end (a cut
    file) loses nothing that was complete before it.
    """
    rec = Records()
    keys = _json_keys(input_field, output_field)
    decoder = json.JSONDecoder(parse_constant=_no_constant)  # strict: control characters in strings are refused
    if tick is not None:
        tick(0, None)
    pos, n, line, counted = text.index("[") + 1, 0, 1, 0  # after blanks and byte-order marks only (_is_json_array)
    while True:
        pos = _WS.match(text, pos).end()
        if pos >= len(text) or text[pos] == "]":
            break
        if len(rec) >= batch:
            yield rec
            rec = Records()
        n += 1
        line, counted = line + text.count("\n", counted, pos), pos
        try:
            obj, end = decoder.raw_decode(text, pos)
            after = _WS.match(text, end).end()
            if after < len(text) and text[after] not in ",]":  # `"{"text": ...`: a stray quote made a string of a brace
                raise json.JSONDecodeError("expected ',' or ']' after an element", text, after)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            end = _resync(text, pos, decoder)
            raw = text[pos:end].rstrip(" \t\r\n,]")
            reason = "invalid_utf8" if not clean and has_surrogates(raw) else "invalid_json"
            rec.quarantine.append((n, reason, f"element {n} (line {line}): {getattr(exc, 'msg', str(exc))}", printable(raw)))
            pos = end
            continue
        raw, pos = text[pos:end], after
        if text.startswith(",", pos):
            pos += 1
        if not clean and has_surrogates(raw):
            rec.quarantine.append((n, "invalid_utf8", f"element {n} (line {line}): bytes that are not UTF-8", printable(raw)))
        elif not isinstance(obj, dict):
            rec.quarantine.append((n, "not_an_object", f"element {n} (line {line}): a JSON {type(obj).__name__} where an object was expected", printable(raw)))
        elif repeated := _repeated_task_keys(raw, keys):
            rec.quarantine.append((n, "duplicate_key", f"element {n} (line {line}): {repeated}", printable(raw)))
        else:
            rec.lines.append(n)
            rec.values.append((obj.get(input_field, _MISSING), obj.get(output_field, _MISSING)))
    rest = text[pos + 1:] if pos < len(text) else ""
    if rest.strip():
        line += text.count("\n", counted, pos)
        rec.quarantine.append((n + 1, "invalid_json", f"after the array's closing bracket (line {line}): text that belongs to no element", printable(rest.strip())))
    if tick is not None:
        tick(n, None)
    yield rec


def _records_from_frame(df: pl.DataFrame, path: Path, input_field: str, output_field: str,
                        batch: int = BATCH) -> Iterator[Records]:
    """The frame's rows as records, `batch` at a time; a row's line is its 1-based row number."""
    missing = [f for f in (input_field, output_field) if f not in df.columns]
    if missing:
        raise IngestError(f"{path}: column(s) {missing} not in {df.columns}")
    df = df.select(input_field, output_field) if input_field != output_field else df.select(input_field)
    for offset in range(0, max(df.height, 1), batch):
        part = df.slice(offset, batch)
        values = list(zip(part[input_field].to_list(), part[output_field].to_list()))
        yield Records(list(range(offset + 1, offset + 1 + part.height)), values)


def read_parquet(path: Path, input_field: str, output_field: str, batch: int = BATCH) -> Iterator[Records]:
    open_regular(path).close()
    try:
        df = pl.read_parquet(path, glob=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise IngestError(f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}") from exc
    yield from _records_from_frame(df, path, input_field, output_field, batch)


def read_hf(path: Path, input_field: str, output_field: str, split: str | None, batch: int = BATCH) -> Iterator[Records]:
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
    # -1 (datasets' mark for an unlabeled row), None or a number past the names is no class:
    # that record is quarantined as no_label, not the whole run stopped.
    named = [(i, f.names) for i, f in enumerate(ds.features.get(n) for n in (input_field, output_field))
             if isinstance(f, datasets.ClassLabel)]
    for rec in _records_from_frame(pl.from_arrow(ds.data.table), path, input_field, output_field, batch):
        for i, names in named:
            classes = _class_names(names, [pair[i] for pair in rec.values])
            rec.values = [(c, b) if i == 0 else (a, c) for (a, b), c in zip(rec.values, classes)]
        yield rec


def _class_names(names: list[str], values: list[object]) -> list[object]:
    """ClassLabel integers as their names; -1, None or a number past the names as _NoLabel."""
    return [names[v] if isinstance(v, int) and 0 <= v < len(names) else _NoLabel(v) for v in values]


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
                *, max_bytes: int = 2**62, labels: list[str] | None = None, batch: int = BATCH) -> Iterator[Records]:
    """One source's records, `batch` at a time. `labels`: a classification task's fixed set, normalized (read_csv)."""
    path = resolve_path(source.path, root)
    if not path.exists():
        raise IngestError(f"{source.path}: no such file or folder")
    fmt = source_format(source, path)  # the reader opens the file with open_regular: a FIFO or a device is refused
    if fmt == "jsonl":
        return read_jsonl(path, input_field, output_field, tick, max_bytes=max_bytes, batch=batch)
    if fmt == "csv":
        return read_csv(path, input_field, output_field, tick, max_bytes=max_bytes, labels=labels, batch=batch)
    if fmt == "parquet":
        return read_parquet(path, input_field, output_field, batch)
    return read_hf(path, input_field, output_field, source.hf_split, batch)


def _type_problem(value: object, field: str) -> tuple[str, str] | None:
    if isinstance(value, _NoLabel):
        return "no_label", f"{field}: ClassLabel value {value.value!r} names no class (datasets marks an unlabeled row -1)"
    if value is _MISSING or value is None:
        return "missing_field", f"{field} is missing or null"
    if not isinstance(value, str):
        return "wrong_type", f"{field} has type {type(value).__name__}, not string"
    return None


def _to_frame(rec: Records, split: str, source: str, input_field: str, output_field: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Typed rows and quarantined records of one source (type checks only)."""
    good_lines, inputs, outputs, bad = [], [], [], list(rec.quarantine)
    for line, (a, b) in zip(rec.lines, rec.values):
        problem = _type_problem(a, input_field) or _type_problem(b, output_field)
        if problem:
            shown = {input_field: a, output_field: b}
            raw = json.dumps({k: None if v is _MISSING else v.value if isinstance(v, _NoLabel) else v for k, v in shown.items()},
                             default=str, ensure_ascii=False)
            bad.append((line, problem[0], problem[1], printable(raw)))
            continue
        if has_surrogates(a) or has_surrogates(b):
            bad.append((line, "invalid_utf8", "bytes that are not UTF-8", printable(a + " | " + b)))
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

    Input columns: input, output. Output columns: label (in the labels' one spelling,
    core.schema.label_expr, as is the fixed set it is checked against), drop_reason, drop_detail.
    """
    if kind == "classification":
        label = label_expr(pl.col("output"))
        empty_output = pl.col("label").str.len_chars() == 0  # invisible characters only are no class
    else:
        visible = pl.col("output").str.normalize("NFKC").str.replace_all(INVISIBLE, "").str.strip_chars()
        label = label_expr(visible.str.extract(class_pattern, 1))
        empty_output = pl.col("output").str.strip_chars().str.len_chars() == 0
    df = rows.with_columns(label=label)
    reason = (
        pl.when(pl.col("input").str.len_bytes() > max_field_bytes).then(pl.lit("too_large"))
        .when(pl.col("output").str.len_bytes() > max_field_bytes).then(pl.lit("too_large"))
        .when(pl.col("input").str.strip_chars().str.len_chars() == 0).then(pl.lit("empty_text"))
        .when(empty_output).then(pl.lit("empty_output"))
        .when(pl.col("label").is_null() | (pl.col("label") == "")).then(pl.lit("no_class"))
    )
    if labels is not None:
        reason = reason.when(~pl.col("label").is_in(normalize_labels(labels))).then(pl.lit("unknown_label"))
    detail = (
        pl.when(pl.col("drop_reason") == "too_large")
        .then(pl.format("input {} bytes, output {} bytes, bound {}", pl.col("input").str.len_bytes(), pl.col("output").str.len_bytes(), pl.lit(max_field_bytes)))
        .when(pl.col("drop_reason") == "unknown_label")
        .then(pl.format("label '{}' is not one of the task's classes", pl.col("label")))
        .when(pl.col("drop_reason") == "no_class")
        .then(pl.lit("the output does not match task.class_pattern"))
    )
    return df.with_columns(drop_reason=reason.otherwise(None)).with_columns(drop_detail=detail)


class _MemoryBound:
    """Stops ingest with a clear error once this process's memory passes a bound, before the
    allocator's abort or the kernel's OOM killer stops it naming nothing.

    Resident memory is bounded by ingest.max_memory_mb or, unset, by what it was at the
    start plus 90 % of what the machine and its cgroup left free then (core.devices). Under
    an address-space limit (`ulimit -v`) the virtual size is bounded too, ADDRESS_RESERVE
    short of the limit: threads' malloc arenas reserve address space 64 MB at a time, so
    the virtual size jumps ahead of the resident one. Checked after each batch of records.
    """

    ADDRESS_RESERVE = 128 * 2**20

    def __init__(self, max_memory_mb: int | None):
        if max_memory_mb is not None:
            self.limit, self.setting = max_memory_mb * 2**20, f"ingest.max_memory_mb ({max_memory_mb})"
        else:
            free = memory_headroom_bytes()
            self.limit = rss_bytes() + int(0.9 * free)
            self.setting = f"what was free when ingest started ({free / 2**20:,.0f} MB; set ingest.max_memory_mb to choose)"
        cap = address_space_limit()
        self.address_limit = None if cap is None else cap - self.ADDRESS_RESERVE

    def check(self, doing: str) -> None:
        rss = rss_bytes()
        if rss > self.limit:
            raise IngestError(
                f"ingest ran out of memory {doing}: {rss / 2**20:,.0f} MB resident, past its bound of "
                f"{self.limit / 2**20:,.0f} MB, {self.setting}. Split the file, convert it to Parquet, "
                "or give ingest more memory (ingest.max_memory_mb)."
            )
        if self.address_limit is not None and (vms := vms_bytes()) > self.address_limit:
            raise IngestError(
                f"ingest ran out of address space {doing}: {vms / 2**20:,.0f} MB of virtual memory, within "
                f"{self.ADDRESS_RESERVE / 2**20:.0f} MB of this process's limit ({(self.address_limit + self.ADDRESS_RESERVE) / 2**20:,.0f} MB, "
                "`ulimit -v`). Split the file, convert it to Parquet, or raise the limit."
            )


def ingest(config: Config, *, root: Path | None = None, progress=None) -> tuple[pl.DataFrame, pl.DataFrame, StageCounts]:
    """Read every train and eval source of `config`.

    Returns (rows, quarantine, counts): rows follow the row schema (core.schema),
    quarantine holds every record that could not be used, with its reason.
    `progress(source, advance, total)` is called as records are read (total once per source).
    """
    labels = config.label_set(root)
    task = config.task
    known = normalize_labels(labels) if labels is not None and task.kind == "classification" else None
    frames, quarantines = [], []
    bound = _MemoryBound(config.ingest.max_memory_mb)
    sources = [("train", s) for s in config.data.train] + [("eval", s) for s in config.data.eval]
    for split, source in sources:
        tick = None if progress is None else (lambda advance, total, p=source.path: progress(p, advance, total))
        config.read_path(source.path, root)  # inside the project, symlinks followed (unless allowed)
        batches = read_source(source, task.input_field, task.output_field, root, tick, max_bytes=config.ingest.max_file_bytes,
                              labels=known, batch=config.ingest.batch_records)
        for rec in batches:
            bound.check(f"reading {source.path}")
            rows, quarantine = _to_frame(rec, split, source.path, task.input_field, task.output_field)
            frames.append(rows)
            quarantines.append(quarantine)
            del rec  # its Python objects, several times its text, are in the frame now
    raw = pl.concat(frames) if frames else pl.DataFrame(schema={"split": pl.String})
    del frames
    checked = validate_rows(
        raw,
        max_field_bytes=config.ingest.max_field_bytes,
        labels=labels,
        kind=task.kind,
        class_pattern=task.class_pattern,
    )
    del raw
    bound.check("checking the rows read")
    bad = checked.filter(pl.col("drop_reason").is_not_null()).select(
        "split", "source", "line",
        pl.col("drop_reason").alias("reason"),
        pl.col("drop_detail").fill_null("").alias("detail"),
        pl.concat_str([pl.col("input"), pl.col("output")], separator=" | ")
        .map_elements(printable, return_dtype=pl.String).alias("raw"),
    )
    good = checked.filter(pl.col("drop_reason").is_null())
    del checked
    good = good.with_columns(
        row_id=row_ids(good["split"], good["input"], good["output"]),  # the raw text: ids stay when normalization changes
        pii=pl.lit([], dtype=pl.List(pl.String)),
        synthetic=pl.lit(False),
    )
    if task.kind == "classification":
        good = good.with_columns(output=pl.col("label"))  # the output is the class: the model learns its one spelling
    good = good.select(ROW_COLUMNS)
    quarantine = pl.concat([*quarantines, bad]) if quarantines else empty_quarantine()
    quarantine = quarantine.sort(["split", "source", "line"], descending=[True, False, False], maintain_order=True)
    total_in = pl.concat([good.select("split"), quarantine.select("split")])
    counts = count_stage("ingest", total_in, good, quarantined=quarantine)
    return good, quarantine, counts
