"""Property-based fuzzing of ingest (hypothesis), for every format it reads.

Each example is a generated file of good records mixed with corruptions, in JSONL, a JSON
array (`.json`), CSV or Parquet; JSONL, JSON arrays and CSV also gzip-, bzip2- or
xz-compressed, JSONL and CSV also in UTF-16/UTF-32 with or without a byte-order mark. The
file goes through `ingest` and the invariant is checked record by record:

- every good record is kept exactly once, at its own line (a JSON array: its position;
  Parquet: its row), with its text unchanged and its label in the labels' one spelling
  (CSV: line ends inside a quoted field read as "\\n", as the reader documents);
- every corruption is quarantined at its own line with the reason the generator expects;
- nothing else is kept or quarantined, so no two records ever become one and
  rows in = kept + quarantined;
- a compressed or Parquet file cut short is an IngestError naming the file, never a
  partial read.

CI runs a bounded, fixed set of examples: the `curate-fuzz` profile, derandomize=True (the
same inputs on every run, no example database), FUZZ_EXAMPLES per test. More on request:

    CURATE_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -q -n 0 tests/core/test_ingest_fuzz.py

runs that many per test, drawn at random (new ones each run; a failure prints the seed
and a @reproduce_failure blob to replay it).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import tempfile
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from core.config import Config
from core.ingest import IngestError, ingest
from tests.conftest import base_config

FUZZ_EXAMPLES = 200
_MORE = int(os.environ.get("CURATE_FUZZ_EXAMPLES", "0") or 0)
settings.register_profile(
    "curate-fuzz",
    max_examples=_MORE or FUZZ_EXAMPLES,
    derandomize=not _MORE,  # CI: a fixed seed, the same examples every run
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
FUZZ = settings.get_profile("curate-fuzz")

LABELS = ["a", "b", "top_up", "card arrival"]
MAX_FIELD = 600  # ingest.max_field_bytes in these configs
BAD_BYTES = ["\udcff", "\udc80", "\udcc3", "\udced\udca0\udc80"]  # as surrogate escapes: 0xff, a lone continuation, a lone lead, an encoded surrogate
COMPRESSORS = {"none": None, "gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}
SUFFIXES = {"none": "", "gzip": ".gz", "bzip2": ".bz2", "xz": ".xz"}
# Wide encodings: (codec, byte-order mark written first)
WIDE = {
    "utf-8": ("utf-8", b""),
    "utf-16 with BOM": ("utf-16-le", b"\xff\xfe"),
    "utf-16-be with BOM": ("utf-16-be", b"\xfe\xff"),
    "utf-32 with BOM": ("utf-32-le", b"\xff\xfe\x00\x00"),
    "utf-16-le without BOM": ("utf-16-le", b""),
    "utf-16-be without BOM": ("utf-16-be", b""),
    "utf-32-le without BOM": ("utf-32-le", b""),
    "utf-32-be without BOM": ("utf-32-be", b""),
}

# Every character UTF-8 can hold (control characters, NUL, quotes, commas, line ends included).
ANY = st.characters(codec="utf-8")
# Without a BOM a wide file is told by its NUL bytes, in text mostly of Latin script: the
# generator stays below U+0100 there and writes no NUL character (documented in ingest).
LATIN = st.characters(max_codepoint=0xFF, exclude_characters="\x00")
WORDS = ["card", "top up", "Überweisung", "返金", "x", "pin 1234", "😀 emoji"]


def _huge_chars(latin: bool) -> list[str]:
    return ["x", "é"] if latin else ["x", "é", "返"]


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in s)


@st.composite
def spelled_label(draw) -> tuple[str, str]:
    """A label of the task's set as a user might write it, and the one spelling it must read as."""
    canon = draw(st.sampled_from(LABELS))
    how = draw(st.sampled_from(["as is", "zero width", "full width", "padded", "soft hyphen", "double space", "bidi mark"]))
    written = {
        "as is": canon,
        "full width": _fullwidth(canon),
        "padded": f"  {canon}\t",
        "double space": canon.replace(" ", "  "),
    }.get(how)
    if written is None:
        mark = {"zero width": "\u200b", "soft hyphen": "\u00ad", "bidi mark": "\u200e"}[how]
        i = draw(st.integers(0, len(canon)))
        written = canon[:i] + mark + canon[i:]
    return written, canon


@st.composite
def good_text(draw, latin: bool = False, single_line: bool = False, csv: bool = False) -> str:
    """Task text: anything around at least one word, so it is never empty once trimmed."""
    alphabet = LATIN if latin else ANY
    if csv:
        alphabet = alphabet.filter(lambda c: c != "\ufeff")  # a BOM after a line end is a second file's (read_csv)
    if single_line:
        alphabet = alphabet.filter(lambda c: c not in "\r\n")
    side = st.text(alphabet, max_size=12)
    return draw(side) + draw(st.sampled_from(WORDS)) + draw(side)


def _line_of(prefix: str) -> int:
    """The 1-based line a record starting after `prefix` is on (CRLF, LF and a bare CR each end a line)."""
    return prefix.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1


@st.composite
def separators(draw) -> str:
    return draw(st.sampled_from(["\n", "\r\n", "\r"]))


def _assemble(draw, records: list[tuple[str, tuple]], header: str | None = None) -> tuple[str, list[tuple[int, tuple]]]:
    """One text of the records (each a one-record string), with mixed line ends, blank lines
    between them and maybe a BOM first; and each record's expected outcome at its line."""
    text = "\ufeff" if draw(st.booleans()) else ""
    if header is not None:
        text += header + draw(separators())
    expected = []
    for i, (record, outcome) in enumerate(records):
        for _ in range(draw(st.integers(0, 1))):
            text += draw(st.sampled_from(["", "  "] if header is None else [""])) + draw(separators())
        expected.append((_line_of(text), outcome))
        text += record
        if i < len(records) - 1 or draw(st.booleans()):
            text += draw(separators())
    return text, expected


def _encode(draw, text: str, wide: str) -> bytes:
    codec, bom = WIDE[wide]
    if codec == "utf-8":
        return text.encode("utf-8", "surrogateescape")  # surrogate escapes become the bad bytes they stand for
    return bom + text.removeprefix("\ufeff").encode(codec)


# Records a reader parses before it hands them on (ingest.batch_records): batches of one and
# three cut every file of a few records at every place; the default takes a file whole.
BATCHES = st.sampled_from([1, 3, 50_000])


def _write_and_ingest(data: bytes, name: str, *, labels=LABELS, batch: int = 50_000):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        cfg = base_config(Path(tmp), [str(path)], ingest={"max_field_bytes": MAX_FIELD, "batch_records": batch}, task={"labels": labels})
        rows, quarantine, counts = ingest(Config.model_validate(cfg))
        assert (quarantine["source"] == str(path)).all()
    return rows, quarantine, counts


def _check(rows: pl.DataFrame, quarantine: pl.DataFrame, counts, expected: list[tuple[int, tuple]]) -> None:
    """The invariant, record by record (see the module docstring)."""
    kept = rows.select("line", "input", "label").rows()
    quarantined = quarantine.select("line", "reason").rows()
    note(f"kept: {kept}")
    note(f"quarantined: {quarantine.select('line', 'reason', 'detail').rows()}")
    want_kept = [(line, o[1], o[2]) for line, o in expected if o[0] == "kept"]
    want_quarantined = [(line, o[1]) for line, o in expected if o[0] == "quarantined"]
    assert Counter((text, label) for _, text, label in kept) == Counter((text, label) for _, text, label in want_kept)
    assert sorted(kept) == sorted(want_kept)
    assert sorted(quarantined) == sorted(want_quarantined)
    assert counts.rows_in == rows.height + quarantine.height == len(expected)
    assert rows["output"].to_list() == rows["label"].to_list()  # a classification output is its label


def _kept(text: str, label: str) -> tuple:
    return ("kept", text, label)


def _quarantined(reason: str) -> tuple:
    return ("quarantined", reason)


# ----------------------------------------------------------------------------- JSON records

JSON_KINDS = ["good", "good", "good", "truncated", "invalid_bytes", "lone_surrogate", "nul_byte", "stray_quote",
              "wrong_type", "missing", "huge", "deep", "too_deep", "duplicate_key", "not_an_object", "empty_text",
              "empty_label", "unknown_label", "bom_first"]
TEXT_ONLY_KINDS = ["invalid_bytes"]  # defined on bytes: not in a wide file
NUL_KINDS = ["nul_byte"]  # a NUL character: not in a wide file without a BOM (see LATIN)


def _dumps(draw, obj: dict, *, indent: int | None = None) -> str:
    items = list(obj.items())
    order = draw(st.permutations(range(len(items))))
    ordered = dict(items[i] for i in order)
    compact = draw(st.booleans())
    return json.dumps(ordered, ensure_ascii=draw(st.booleans()), indent=indent,
                      separators=(",", ":") if compact and indent is None else None)


def _with_nesting(line: str, depth: int) -> str:
    """The record's "meta" placeholder as lists nested `depth` deep (json.dumps would recurse that deep)."""
    return line.replace('"DEEP_MARK"', "[" * depth + "1" + "]" * depth)


@st.composite
def json_record(draw, kind: str, *, latin: bool = False, indent: int | None = None, array: bool = False) -> tuple[str, tuple]:
    """One JSON object as text (a JSONL line, or an array element when `array`) and its expected outcome."""
    text = draw(good_text(latin))
    written, canon = draw(spelled_label())
    obj: dict = {"text": text, "label": written}
    if draw(st.booleans()):
        obj["id"] = draw(st.integers(0, 10**6))
    if kind == "deep":  # nesting a parser takes (orjson allows 1024 levels; json.loads, for arrays, about 1000 less the stack)
        obj["meta"] = "DEEP_MARK"
        return _with_nesting(_dumps(draw, obj, indent=indent), draw(st.integers(1, 50 if array else 1000))), _kept(text, canon)
    if kind == "too_deep":
        obj["meta"] = "DEEP_MARK"
        depth = draw(st.integers(1100, 3000) if not array else st.just(20_000))
        return _with_nesting(_dumps(draw, obj, indent=indent), depth), _quarantined("invalid_json")
    if kind in ("good", "bom_first"):
        line = _dumps(draw, obj, indent=indent)
        return ("\ufeff" + line if kind == "bom_first" else line), _kept(text, canon)
    if kind == "wrong_type":
        bad = draw(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                             st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
        obj[draw(st.sampled_from(["text", "label"]))] = bad
        return _dumps(draw, obj, indent=indent), _quarantined("wrong_type")
    if kind == "missing":
        key = draw(st.sampled_from(["text", "label"]))
        if draw(st.booleans()):
            obj[key] = None
        else:
            del obj[key]
        return _dumps(draw, obj, indent=indent), _quarantined("missing_field")
    if kind == "huge":
        obj["text"] = draw(st.sampled_from(_huge_chars(latin))) * (MAX_FIELD + draw(st.integers(1, 2 * MAX_FIELD)))
        return _dumps(draw, obj, indent=indent), _quarantined("too_large")
    if kind == "duplicate_key":
        key = draw(st.sampled_from(["text", "label"]))
        obj["DUPLICATE_KEY_MARK"] = draw(good_text(latin)) if key == "text" else draw(st.sampled_from(LABELS))
        line = _dumps(draw, obj, indent=indent).replace('"DUPLICATE_KEY_MARK"', json.dumps(key))
        return line, _quarantined("duplicate_key")
    if kind == "not_an_object":  # in JSON Lines no list: a file whose one line holds a list is a JSON array file
        lists = st.lists(st.integers(), max_size=3) if array else st.nothing()
        value = draw(st.one_of(lists, st.text(max_size=5), st.integers(), st.booleans(), st.none()))
        return json.dumps(value), _quarantined("not_an_object")
    if kind == "empty_text":
        obj["text"] = draw(st.sampled_from(["", " ", "\t \n"]))
        return _dumps(draw, obj, indent=indent), _quarantined("empty_text")
    if kind == "empty_label":
        obj["label"] = draw(st.sampled_from(["", "  ", "\u200b", "\u00ad", "\ufeff"]))
        return _dumps(draw, obj, indent=indent), _quarantined("empty_output")
    if kind == "unknown_label":
        obj["label"] = draw(st.sampled_from(["zzz", "unknown class", "a b"]))
        return _dumps(draw, obj, indent=indent), _quarantined("unknown_label")
    line = _dumps(draw, obj, indent=indent)
    if kind == "truncated":
        return line[:draw(st.integers(1, len(line) - 1))], _quarantined("invalid_json")
    if kind == "invalid_bytes":  # anywhere in a JSONL line; inside the text's string in an array element
        if array:
            obj["text"] = text[:1] + draw(st.sampled_from(BAD_BYTES)) + text[1:]
            return json.dumps(obj, ensure_ascii=False, indent=indent), _quarantined("invalid_utf8")
        i = draw(st.integers(0, len(line)))
        return line[:i] + draw(st.sampled_from(BAD_BYTES)) + line[i:], _quarantined("invalid_utf8")
    if kind == "lone_surrogate":  # a \ud800-style escape with no partner: JSON that names no character
        obj["text"] = "LONE_SURROGATE_MARK" + text
        escape = draw(st.sampled_from(["\\ud800", "\\udbff", "\\udc00", "\\udfff"]))
        line = _dumps(draw, obj, indent=indent).replace("LONE_SURROGATE_MARK", escape)
        return line, _quarantined("invalid_utf8" if array else "invalid_json")  # json.loads takes it; the text is not UTF-8
    if kind == "nul_byte":  # a raw NUL (not the \u0000 escape): not JSON, inside a string or out
        i = draw(st.integers(0, len(line)))
        return line[:i] + "\x00" + line[i:], _quarantined("invalid_json")
    if kind == "stray_quote":  # an unescaped quote anywhere: an odd number of them is never JSON
        spots = [i for i in range(len(line) + 1) if (len(line[:i]) - len(line[:i].rstrip("\\"))) % 2 == 0]
        i = draw(st.sampled_from(spots))
        return line[:i] + '"' + line[i:], _quarantined("invalid_json")
    raise AssertionError(kind)


@st.composite
def jsonl_files(draw) -> tuple[bytes, str, list]:
    wide = draw(st.sampled_from(list(WIDE)))
    compression = draw(st.sampled_from(list(COMPRESSORS)))
    kinds = [k for k in JSON_KINDS if wide == "utf-8" or k not in TEXT_ONLY_KINDS]
    if wide.endswith("without BOM"):
        kinds = [k for k in kinds if k not in NUL_KINDS and k != "bom_first"]
    latin = wide.endswith("without BOM")
    records = [draw(json_record(kind, latin=latin)) for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=10))]
    text, expected = _assemble(draw, records)
    if wide.endswith("without BOM"):
        text = text.removeprefix("\ufeff")
    data = _encode(draw, text, wide)
    if COMPRESSORS[compression]:
        data = COMPRESSORS[compression](data)
    name = "raw" + draw(st.sampled_from([".jsonl", ".ndjson", ".json"])) + (SUFFIXES[compression] if draw(st.booleans()) else "")
    note(f"{wide}, {compression}, {name}: {data[:3000]!r}")
    return data, name, expected


@FUZZ
@given(jsonl_files(), BATCHES)
def test_fuzzed_jsonl_keeps_every_good_record_once_and_quarantines_every_corruption(case, batch):
    data, name, expected = case
    _check(*_write_and_ingest(data, name, batch=batch), expected)


# Corruptions that break an element's JSON, so that where it ends cannot be told by parsing it.
BREAKING = {"truncated", "too_deep", "stray_quote", "nul_byte"}
ARRAY_LAYOUTS = ["compact", "one a line", "first on the bracket's line", "indented"]


@st.composite
def json_array_files(draw) -> tuple[bytes, str, list]:
    layout = draw(st.sampled_from(ARRAY_LAYOUTS))
    compression = draw(st.sampled_from(list(COMPRESSORS)))
    kinds = draw(st.lists(st.sampled_from([k for k in JSON_KINDS if k != "bom_first"]), min_size=1, max_size=10))
    if layout == "compact":  # in a one-line array, where records begin after a broken element cannot be told:
        broken = [k for k in kinds if k in BREAKING]  # the generator puts one last (a cut file ends so)
        kinds = [k for k in kinds if k not in BREAKING] + broken[:1]
    indent = 2 if layout == "indented" else None
    if layout != "compact":  # a good element after a broken one: parsing resumes at the next line starting one (_resync)
        kinds = [k for kind in kinds for k in ([kind, "good"] if kind in BREAKING else [kind])]
    elements = [draw(json_record(kind, indent=indent, array=True)) for kind in kinds]
    bodies = [body.replace("\n", "\n  ") for body, _ in elements] if layout == "indented" else [b for b, _ in elements]
    if layout == "compact":
        text = "[" + ", ".join(bodies) + ("" if kinds[-1] == "truncated" else "]")
    elif layout == "one a line":
        text = "[\n" + ",\n".join(bodies) + "\n]\n"
    elif layout == "first on the bracket's line":
        text = "[" + ",\n".join(bodies) + "]"
    else:
        text = "[\n  " + ",\n  ".join(bodies) + "\n]"
    text = ("\ufeff" if draw(st.booleans()) else "") + text
    data = text.encode("utf-8", "surrogateescape")
    if COMPRESSORS[compression]:
        data = COMPRESSORS[compression](data)
    expected = [(n, outcome) for n, (_, outcome) in enumerate(elements, start=1)]  # line = the element's position
    note(f"{layout}, {compression}: {data[:3000]!r}")
    return data, "raw.json" + SUFFIXES[compression], expected


@FUZZ
@given(json_array_files(), BATCHES)
def test_fuzzed_json_array_keeps_every_good_element_once_and_quarantines_every_corruption(case, batch):
    data, name, expected = case
    _check(*_write_and_ingest(data, name, batch=batch), expected)


# ----------------------------------------------------------------------------- CSV

CSV_KINDS = ["good", "good", "good", "multi_line", "stray_quote", "truncated_first", "truncated_last_quoted",
             "wrong_field_count", "invalid_bytes", "huge", "empty_text", "empty_label", "unknown_label",
             "repeated_header", "bom_first"]

# Faults that can leave a quoted field open at the end of its line. RFC 4180 then reads on to
# the next lone quote before a delimiter or a line end; read_csv takes such a record over
# several lines only with the header's field count and no line inside it that reads as a
# record of its own (a known label), so every good line it would run over is read again. Two
# of these faults on consecutive lines, nothing between them, can be each other's closing
# quote and make one valid field: no parser can tell that from a message over two lines, so
# the generator puts a good line after each (docs/reliability.md).
RUNAWAY = {"stray_quote", "truncated_first", "truncated_last_quoted"}


def _csv_field(value: str, quote_all: bool) -> str:
    if quote_all or any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _csv_read(text: str) -> str:
    """What the reader makes of a field's text: every line end is "\\n" (core/ingest.py read_csv)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


@st.composite
def csv_record(draw, kind: str, columns: list[str], quote_all: bool, latin: bool) -> tuple[str, tuple]:
    text = draw(good_text(latin, single_line=kind != "multi_line", csv=True))
    written, canon = draw(spelled_label())
    values = {"text": text, "label": written, "id": str(draw(st.integers(0, 999)))}
    outcome = _kept(_csv_read(text), canon)
    if kind == "repeated_header":
        return ",".join(_csv_field(c, quote_all) for c in columns), _quarantined("repeated_header")
    if kind == "huge":
        values["text"], outcome = draw(st.sampled_from(_huge_chars(latin))) * (MAX_FIELD + draw(st.integers(1, 2 * MAX_FIELD))), _quarantined("too_large")
    elif kind == "empty_text":
        values["text"], outcome = draw(st.sampled_from(["", " ", "\t"])), _quarantined("empty_text")
    elif kind == "empty_label":
        values["label"], outcome = draw(st.sampled_from(["", "  ", "\u200b", "\u00ad"])), _quarantined("empty_output")
    elif kind == "unknown_label":
        values["label"], outcome = draw(st.sampled_from(["zzz", "unknown class"])), _quarantined("unknown_label")
    elif kind == "invalid_bytes":
        i = draw(st.integers(0, len(text)))
        values["text"], outcome = text[:i] + draw(st.sampled_from(BAD_BYTES)) + text[i:], _quarantined("invalid_utf8")
    elif kind in ("truncated_first", "truncated_last_quoted"):
        values = {k: v.replace('"', "") for k, v in values.items()}  # no doubled quote for the cut to land in
        values["text"] = values["text"] if values["text"].strip() else "x"
    fields = [_csv_field(values[c], quote_all) for c in columns]
    line = ",".join(fields)
    if kind == "bom_first":
        return "\ufeff" + line, outcome
    if kind == "stray_quote":  # a quote anywhere RFC 4180 does not allow one
        i = draw(st.integers(0, len(line)))
        return line[:i] + '"' + line[i:], _quarantined("malformed_quote")
    if kind == "wrong_field_count":
        if draw(st.booleans()):
            return line + "," + _csv_field(draw(st.text(LATIN, max_size=5)), quote_all), _quarantined("wrong_field_count")
        drop = draw(st.integers(0, len(fields) - 1))
        return ",".join(f for i, f in enumerate(fields) if i != drop), _quarantined("wrong_field_count")
    if kind == "truncated_first":  # cut inside the first field: an open quote never closes, else one field is left
        first = fields[0]
        k = draw(st.integers(1, len(first)))
        quoted_open = first.startswith('"') and k < len(first)
        return first[:k], _quarantined("malformed_quote" if quoted_open else "wrong_field_count")
    if kind == "truncated_last_quoted":  # the quote-all line cut short: its last field's quote never closes
        last = _csv_field(values[columns[-1]], True)
        head = ",".join(fields[:-1])
        return head + "," + last[:draw(st.integers(1, len(last) - 1))], _quarantined("malformed_quote")
    return line, outcome


@st.composite
def csv_files(draw) -> tuple[bytes, str, list]:
    wide = draw(st.sampled_from(list(WIDE)))
    compression = draw(st.sampled_from(list(COMPRESSORS)))
    columns = draw(st.permutations(["text", "label"] + (["id"] if draw(st.booleans()) else [])))
    quote_all = draw(st.booleans())
    kinds = [k for k in CSV_KINDS if wide == "utf-8" or k not in TEXT_ONLY_KINDS]
    if wide.endswith("without BOM"):
        kinds = [k for k in kinds if k != "bom_first"]
    latin = wide.endswith("without BOM")
    records = []
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=10)):
        records.append(draw(csv_record(kind, columns, quote_all, latin)))
        if kind in RUNAWAY:  # a good line after it: two such faults in a row can pair into one valid field (see RUNAWAY)
            records.append(draw(csv_record("good", columns, quote_all, latin)))
    text, expected = _assemble(draw, records, header=",".join(_csv_field(c, quote_all) for c in columns))
    if wide.endswith("without BOM"):
        text = text.removeprefix("\ufeff")
    data = _encode(draw, text, wide)
    if COMPRESSORS[compression]:
        data = COMPRESSORS[compression](data)
    note(f"{wide}, {compression}: {data[:3000]!r}")
    return data, "raw.csv" + SUFFIXES[compression], expected


@FUZZ
@given(csv_files(), BATCHES)
def test_fuzzed_csv_keeps_every_good_record_once_and_quarantines_every_corruption(case, batch):
    data, name, expected = case
    _check(*_write_and_ingest(data, name, batch=batch), expected)


# ----------------------------------------------------------------------------- Parquet

@st.composite
def parquet_files(draw) -> tuple[bytes, list]:
    texts, labels, expected = [], [], []
    for n in range(1, draw(st.integers(1, 12)) + 1):
        kind = draw(st.sampled_from(["good", "good", "good", "null", "huge", "empty_text", "empty_label", "unknown_label"]))
        text = draw(good_text())
        written, canon = draw(spelled_label())
        outcome = _kept(text, canon)
        if kind == "null":
            if draw(st.booleans()):
                text = None
            else:
                written = None
            outcome = _quarantined("missing_field")
        elif kind == "huge":
            text, outcome = "x" * (MAX_FIELD + 1), _quarantined("too_large")
        elif kind == "empty_text":
            text, outcome = draw(st.sampled_from(["", "  "])), _quarantined("empty_text")
        elif kind == "empty_label":
            written, outcome = draw(st.sampled_from(["", "\u200b"])), _quarantined("empty_output")
        elif kind == "unknown_label":
            written, outcome = "zzz", _quarantined("unknown_label")
        texts.append(text)
        labels.append(written)
        expected.append((n, outcome))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raw.parquet"
        pl.DataFrame({"label": labels, "text": texts}, schema={"label": pl.String, "text": pl.String}).write_parquet(
            path, row_group_size=draw(st.integers(1, 5)), compression=draw(st.sampled_from(["zstd", "snappy", "uncompressed"])))
        return path.read_bytes(), expected


@FUZZ
@given(parquet_files(), BATCHES)
def test_fuzzed_parquet_keeps_every_good_row_once_and_quarantines_every_bad_one(case, batch):
    data, expected = case
    _check(*_write_and_ingest(data, "raw.parquet", batch=batch), expected)


# ----------------------------------------------------------------------------- cut files

@st.composite
def cut_files(draw) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["gzip", "bzip2", "xz", "parquet"]))
    records = [{"text": draw(good_text()), "label": draw(st.sampled_from(LABELS))} for _ in range(draw(st.integers(1, 20)))]
    if kind == "parquet":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "raw.parquet"
            pl.DataFrame(records).write_parquet(path)
            data, name, magic = path.read_bytes(), "raw.parquet", 1
    else:
        plain = "".join(json.dumps(r) + "\n" for r in records).encode()
        data, name, magic = COMPRESSORS[kind](plain), "raw.jsonl" + SUFFIXES[kind], {"gzip": 2, "bzip2": 3, "xz": 6}[kind]
    return data[:draw(st.integers(magic, len(data) - 1))], name


@FUZZ
@given(cut_files())
def test_a_compressed_or_parquet_file_cut_short_is_an_error_naming_it(case):
    """Records past the cut cannot be counted, so none is kept: the run stops with the file named."""
    data, name = case
    with pytest.raises(IngestError, match=rf"{name}: .*(does not decompress|not a readable Parquet file)"):
        _write_and_ingest(data, name)
