"""filters.dedupe_file: kept rows unchanged, one clusters row per input row, every format."""

from __future__ import annotations

import os

import polars as pl
import pytest
from typer.testing import CliRunner

from core.io import read_table, write_table
from filters.dedupe_file import dedupe_file
from filters.near_dup import NearDupSettings
from flows.cli import app

BASE = "please tell me how i can transfer money from my savings account to my checking account today"
NEAR = "please tell me how i can transfer money from my savings account to my checking account tonight"
OTHER = "what is the weather going to be like in boston tomorrow morning before my flight leaves"


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "uid": ["u0", "u1", "u2", "u3", "u4", "u5"],
            "text": [OTHER, BASE, None, NEAR, BASE, ""],
            "score": ["1.5", "2", "3", "4", "5", "6"],  # text so CSV round-trips unchanged
        }
    )


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_roundtrip_keeps_rows_unchanged(tmp_path, ext):
    src = write_table(_frame(), tmp_path / f"in.{ext}")
    summary = dedupe_file(
        src, field="text", out=tmp_path / f"out.{ext}", clusters=tmp_path / f"clusters.{ext}", id_field="uid"
    )
    original = read_table(src)
    kept = read_table(tmp_path / f"out.{ext}")
    assert kept.columns == original.columns
    assert kept.equals(original.filter(pl.col("uid").is_in(["u0", "u1", "u2", "u5"])))
    assert summary["rows_in"] == 6 and summary["kept"] == 4 and summary["removed"] == 2
    assert summary["clusters"] == 1 and summary["seconds"] >= 0

    clusters = read_table(tmp_path / f"clusters.{ext}")
    assert clusters.height == 6
    assert clusters["row"].cast(pl.Int64).to_list() == [0, 1, 2, 3, 4, 5]
    assert clusters["kept"].cast(pl.String).str.to_lowercase().to_list() == [
        "true", "true", "true", "false", "false", "true",
    ]
    assert clusters["duplicate_of"].to_list() == [None, None, None, "u1", "u1", None]
    assert clusters["cluster"].cast(pl.Int64).to_list() == [0, 1, 2, 1, 1, 5]
    sim = clusters["similarity"].cast(pl.Float64).to_list()
    assert sim[4] == 1.0 and 0.8 <= sim[3] < 1.0 and sim[0] is None


def test_without_id_field_duplicate_of_is_row_position(tmp_path):
    src = write_table(_frame(), tmp_path / "in.parquet")
    dedupe_file(src, field="text", out=tmp_path / "out.parquet", clusters=tmp_path / "c.parquet")
    clusters = pl.read_parquet(tmp_path / "c.parquet")
    assert clusters["duplicate_of"].to_list() == [None, None, None, 1, 1, None]


def test_missing_field_is_reported(tmp_path):
    src = write_table(_frame(), tmp_path / "in.jsonl")
    with pytest.raises(ValueError, match="nope"):
        dedupe_file(src, field="nope", out=tmp_path / "out.jsonl")


def test_cli_dedupe_command(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "in.csv"
    src.write_text("id,text\n1,how do I top up my card with cash today\n2,How do I top-up my card with cash today?\n3,where is my new card it has not arrived\n")
    out, clusters = tmp_path / "kept.jsonl", tmp_path / "clusters.parquet"
    res = subprocess.run(
        [sys.executable, "-m", "curate", "dedupe", str(src), "--field", "text", "--out", str(out), "--clusters", str(clusters), "--id-field", "id"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    import polars as pl

    assert pl.read_ndjson(out)["id"].cast(pl.String).to_list() == ["1", "3"]
    c = pl.read_parquet(clusters)
    assert c["row"].to_list() == [0, 1, 2] and c["kept"].to_list() == [True, False, True]
    assert c["duplicate_of"].cast(pl.String).to_list()[1] == "1"


# ----------------------------------------------------------------------------------------
# Outputs never overwrite the data; kept rows byte for byte; bad input is a clear error
# ----------------------------------------------------------------------------------------
JSONL_LINES = [  # kept as written: spacing, escapes, 1 and 1.0, mixed id types, keys missing, nested of any shape
    '{"id": 1, "text": "%s", "score": 1.0, "meta": {"a": [1, 2]}}\r\n' % BASE,
    '{ "id" : "b",  "text": "%s", "meta": [1, "x"] }\r\n' % NEAR,
    '{"id": 2.5, "text": "caf\\u00e9 %s"}\n' % OTHER,
    "\n",
    '{"id": null, "text": "%s", "extra": true}\r\n' % BASE,
    '{"id": 3, "text": 42}',
]


def test_jsonl_kept_rows_are_the_input_lines_byte_for_byte(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(("\ufeff" + "".join(JSONL_LINES)).encode())
    summary = dedupe_file(src, field="text", out=tmp_path / "out.jsonl", clusters=tmp_path / "c.jsonl", id_field="id")
    assert summary["rows_in"] == 5 and summary["kept"] == 3  # rows 1 and 3 (0-based) fold into row 0
    assert (tmp_path / "out.jsonl").read_bytes() == ("\ufeff" + JSONL_LINES[0] + JSONL_LINES[2] + JSONL_LINES[5]).encode()
    clusters = pl.read_ndjson(tmp_path / "c.jsonl")
    assert clusters["duplicate_of"].to_list() == [None, "1", None, "1", None]  # ids of mixed types: as text


def test_csv_kept_rows_are_the_input_records_byte_for_byte(tmp_path):
    header = "id,text,score\r\n"
    rows = [f"1,{BASE},1.0\r\n", f'2,"{NEAR}, with ""quotes""\r\nand a line break",2\r\n', f"3,{OTHER},03\n", f"4,{BASE},\r\n"]
    src = tmp_path / "in.csv"
    src.write_bytes((header + "".join(rows)).encode())
    summary = dedupe_file(src, field="text", out=tmp_path / "out.csv", id_field="id", settings=NearDupSettings(ngram=2))
    assert summary["rows_in"] == 4 and summary["kept"] == 3
    assert (tmp_path / "out.csv").read_bytes() == (header + rows[0] + rows[1] + rows[2]).encode()


def test_parquet_kept_rows_have_the_same_schema_and_values(tmp_path):
    df = pl.DataFrame({"id": [1, 2, None], "text": [BASE, BASE, OTHER], "score": [1.0, None, 3.5], "tags": [["a"], [], None]},
                      schema={"id": pl.Int32, "text": pl.String, "score": pl.Float32, "tags": pl.List(pl.String)})
    df.write_parquet(tmp_path / "in.parquet")
    dedupe_file(tmp_path / "in.parquet", field="text", out=tmp_path / "out.parquet")
    kept = pl.read_parquet(tmp_path / "out.parquet")
    assert kept.schema == df.schema and kept.equals(df[[0, 2]])


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_an_output_that_is_the_input_is_refused_and_the_input_is_untouched(tmp_path, ext):
    src = write_table(_frame(), tmp_path / f"in.{ext}")
    before = src.read_bytes()
    (tmp_path / f"link.{ext}").symlink_to(src)
    os.link(src, tmp_path / f"hard.{ext}")
    for out, clusters in [(src, None), (tmp_path / "sub" / ".." / f"in.{ext}", None), (tmp_path / f"link.{ext}", None),
                          (tmp_path / f"hard.{ext}", None), (tmp_path / f"out.{ext}", src)]:
        with pytest.raises(ValueError, match="is the input"):
            dedupe_file(src, field="text", out=out, clusters=clusters)
    assert src.read_bytes() == before and not (tmp_path / f"out.{ext}").exists()


def test_clusters_written_over_the_kept_rows_is_refused(tmp_path):
    src = write_table(_frame(), tmp_path / "in.jsonl")
    (tmp_path / "alias.jsonl").symlink_to(tmp_path / "out.jsonl")  # not there yet: compared by resolved path
    for clusters in (tmp_path / "out.jsonl", tmp_path / "alias.jsonl"):
        with pytest.raises(ValueError, match="the kept rows' output"):
            dedupe_file(src, field="text", out=tmp_path / "out.jsonl", clusters=clusters)
    assert not (tmp_path / "out.jsonl").exists()
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        dedupe_file(src, field="text", out=tmp_path / "folder.jsonl")


@pytest.mark.parametrize("name,content,fragments", [
    ("bad.jsonl", f'{{"text": "{BASE}"}}\n{{"text": oops}}\n[1, 2]\n', ["bad.jsonl", "line 2: not valid JSON", "line 3: not a JSON object"]),
    ("utf8.jsonl", b'{"text": "a"}\n{"text": "\xff"}\n', ["utf8.jsonl", "line 2: bytes that are not UTF-8"]),
    ("quote.csv", f'id,text\n1,"{BASE}\n2,{NEAR}\n', ["quote.csv", "line 2: a quoted field never closes"]),
    ("width.csv", f"id,text\n1,{BASE},extra\n", ["width.csv", "line 2: 3 fields, the header has 2"]),
    ("empty.jsonl", "", ["empty.jsonl", "no records"]),
    ("empty.csv", "\n", ["empty.csv", "no records"]),
    ("not.parquet", "PAR1 not really", ["not.parquet", "not a readable Parquet file"]),
])
def test_unreadable_input_is_a_clear_error_naming_file_and_line(tmp_path, name, content, fragments):
    src = tmp_path / name
    src.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError) as exc:
        dedupe_file(src, field="text", out=tmp_path / "out.jsonl")
    for fragment in fragments:
        assert fragment in str(exc.value), str(exc.value)
    assert not (tmp_path / "out.jsonl").exists()


def test_a_csv_with_only_its_header_dedupes_to_its_header(tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"id,text\r\n")
    assert dedupe_file(src, field="text", out=tmp_path / "out.csv")["rows_in"] == 0
    assert (tmp_path / "out.csv").read_bytes() == b"id,text\r\n"


@pytest.mark.parametrize("content,args,fragment", [
    ('{"text": "a"}\n{"text": nope}\n', [], "line 2: not valid JSON"),
    ('{"text": "a", "m": {"x": 1}}\n{"text": "a b", "m": [1]}\n', [], None),  # nested of mixed shapes: fine
    ("", [], "no records"),
    ('{"text": "a"}\n', ["--out", "{src}"], "is the input"),
    ('{"text": "a"}\n', ["--clusters", "{out}"], "the kept rows' output"),
])
def test_cli_dedupe_errors_are_messages_not_tracebacks(tmp_path, content, args, fragment):
    src, out = tmp_path / "in.jsonl", tmp_path / "kept.jsonl"
    src.write_text(content)
    argv = ["dedupe", str(src), "--field", "text", "--out", str(out)] + [a.format(src=src, out=out) for a in args]
    res = CliRunner().invoke(app, argv)
    if fragment is None:
        assert res.exit_code == 0, res.output
        assert out.read_bytes() == src.read_bytes()
    else:
        said = " ".join(res.output.split())  # rich wraps long lines
        assert res.exit_code == 2 and fragment in said and "Traceback" not in said, res.output
        assert src.read_text() == content
