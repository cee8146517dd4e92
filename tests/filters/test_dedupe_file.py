"""filters.dedupe_file: kept rows unchanged, one clusters row per input row, every format."""

from __future__ import annotations

import polars as pl
import pytest

from core.io import read_table, write_table
from filters.dedupe_file import dedupe_file

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
