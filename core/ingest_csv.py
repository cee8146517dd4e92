"""RFC 4180 CSV, strictly: a stray quote quarantines its own record and never merges two.

    for batch in read_csv(path, "text", "label"):   # Records: kept values and quarantine, with lines
        ...
    fields, after = parse_csv_record(text, pos)      # one record; _MalformedQuote where RFC 4180 allows no quote

Our own reader rather than polars' or pyarrow's: on a stray quote polars fails the whole
file and pyarrow merges two records into one row (docs/benchmarks.md, docs/reliability.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from core.ingest_files import BATCH, BOM, TICK, IngestError, Records, decode_text, has_surrogates, printable, read_input_bytes
from core.schema import label_expr

__all__ = ["parse_csv_record", "read_csv"]


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


def _runs_over_records(text: str, pos: int, end: int, width: int, i_out: int, labels: list[str] | None) -> int | None:
    """The first line after the first of the record text[pos:end] that reads, on its own, as a
    record of this file: `width` fields and (given `labels`) a label of the task's set, 1-based
    within the record; None when none does (a message over several lines reads as no record)."""
    found = []
    for k, line in enumerate(text[pos:end].split("\n")[1:], start=2):
        try:
            fields, _ = parse_csv_record(line, 0)
        except _MalformedQuote:
            continue
        if len(fields) == width:
            found.append((k, fields[i_out]))
    if not found or labels is None:
        return found[0][0] if found else None
    spelled = pl.Series("label", [label for _, label in found], dtype=pl.String).to_frame().select(label_expr(pl.col("label")))
    return next((k for (k, _), label in zip(found, spelled["label"]) if label in labels), None)


def read_csv(path: Path, input_field: str, output_field: str, tick=None, *, max_bytes: int = 2**62,
             labels: list[str] | None = None, batch: int = BATCH) -> Iterator[Records]:
    """RFC 4180 CSV, strictly (parse_csv_record); the line of each record is the line it starts on.

    A record with a quote RFC 4180 does not allow is quarantined as `malformed_quote` with its
    first line, and parsing resumes on the next line: a record that starts there well-formed
    is kept, so one stray quote never merges two records into one, nor swallows the rows
    after it. Quoted newlines, commas and doubled quotes are fields' text as usual.

    A quote that opens a field and never closes on its line is valid RFC 4180 up to the next
    lone quote before a delimiter or a line end, however many lines later: everything between
    would be one field. So a record over several lines is not taken when one of its later lines
    reads on its own as a record of the file (the header's field count and, with a fixed label
    set, `labels` in their one spelling, one of those labels; without one, only when the record
    has the wrong field count): its first line is then `malformed_quote` and parsing resumes on
    the next, so the records it ran over are kept.
    """
    text, clean = decode_text(read_input_bytes(path, max_bytes))
    rec = Records()
    # Mixed line endings (CRLF, LF, a bare CR) all end a line; only "\n" splits, so that
    # U+2028 and form feeds inside a field stay text, as in an editor's line count.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if BOM in text:  # a second file's byte-order mark, where files were concatenated
        text = text.replace("\n" + BOM, "\n")
    if text.endswith("\n"):
        text = text[:-1]  # the file's final newline ends the last line; it starts none
    if not text:
        return
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
        if len(rec) >= batch:
            yield rec
            rec = Records()
        try:
            fields, after = parse_csv_record(text, pos)
        except _MalformedQuote as exc:  # quarantine the record's first line; resume on the next one
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            rec.quarantine.append((line, "malformed_quote", str(exc), printable(text[pos:end])))
            pos, line = end + 1, line + 1
            continue
        spans = text.count("\n", pos, after - 1) + 1
        runaway = None
        if spans > 1 and (len(fields) != width or labels) and (k := _runs_over_records(text, pos, after - 1, width, i_out, labels)):
            runaway = f"a quoted field runs on over {spans} lines, and its line {k} reads as a record of its own"
        if runaway:  # the first line is the broken record; the lines it ran over are read again
            end = text.find("\n", pos)
            rec.quarantine.append((line, "malformed_quote", runaway + ": a quote that never closes on its line", printable(text[pos:end])))
            pos, line = end + 1, line + 1
            continue
        start, raw = line, text[pos:after - 1]
        pos, line = after, line + text.count("\n", pos, after)
        if fields == [""]:
            continue  # blank line
        if fields == header:
            rec.quarantine.append((start, "repeated_header", "the header again (files concatenated?), not a record", printable(raw)))
            continue
        if not clean and has_surrogates(raw):
            rec.quarantine.append((start, "invalid_utf8", "bytes that are not UTF-8", printable(raw)))
            continue
        if len(fields) != width:
            rec.quarantine.append((start, "wrong_field_count", f"{len(fields)} fields, header has {width}", printable(raw)))
            continue
        rec.lines.append(start)
        rec.values.append((fields[i_in], fields[i_out]))
    yield rec
