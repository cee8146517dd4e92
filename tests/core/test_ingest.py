"""Ingest: every kind of unusable record lands in quarantine with its reason and line."""

import json

import polars as pl
import pytest

from core.config import Config
from core.ingest import IngestError, ingest
from tests.conftest import base_config


def _ingest(tmp_path, train, eval=None, **sections):
    return ingest(Config.model_validate(base_config(tmp_path, train, eval, **sections)))


def test_jsonl_bad_records_are_quarantined_with_reason_and_line(tmp_path):
    path = tmp_path / "raw.jsonl"
    lines = [
        b'\xef\xbb\xbf{"text": "first row ok", "label": "a"}',  # BOM on the first line
        b'{"text": "second row ok", "label": "b"}\r',  # CRLF
        b"",  # blank: no record
        b'{"text": "truncated',  # 4
        b'{"label": "a"}',  # 5 missing field
        b'{"text": 3, "label": "a"}',  # 6 wrong type
        b'{"text": "  ", "label": "a"}',  # 7 whitespace only
        b'{"text": "bad \xff byte", "label": "a"}',  # 8 invalid UTF-8
        b'{"text": "unknown class", "label": "zzz"}',  # 9
        b'"just a string"',  # 10
        b'{"text": "' + b"x" * 300 + b'", "label": "a"}',  # 11 too large (bound 200 below)
        b'{"text": "nul \\u0000 inside is text", "label": "c"}',  # 12 ok: a NUL escape is valid JSON text
        b'{"text": "extra fields are fine", "label": "c", "other": 1}',  # 13 ok
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows, quarantine, counts = _ingest(tmp_path, [str(path)], ingest={"max_field_bytes": 200})
    reasons = dict(zip(quarantine["line"].to_list(), quarantine["reason"].to_list()))
    assert reasons == {
        4: "invalid_json",
        5: "missing_field",
        6: "wrong_type",
        7: "empty_text",
        8: "invalid_utf8",
        9: "unknown_label",
        10: "not_an_object",
        11: "too_large",
    }
    assert rows["line"].to_list() == [1, 2, 12, 13]
    assert rows["input"][0] == "first row ok"  # BOM removed
    assert (quarantine["source"] == str(path)).all()
    assert counts.rows_in == rows.height + quarantine.height == 12
    assert "\ufffd" in quarantine.filter(pl.col("reason") == "invalid_utf8")["raw"][0]


def test_csv_quoted_newlines_and_wrong_field_counts(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text('text,label\n"multi\nline text",a\nplain row,b\ntoo,many,fields\n"quoted, comma",c\nshort\n', encoding="utf-8")
    rows, quarantine, counts = _ingest(tmp_path, [str(path)])
    assert rows["input"].to_list() == ["multi\nline text", "plain row", "quoted, comma"]
    assert rows["line"].to_list() == [2, 4, 6]  # the line each record starts on
    assert quarantine.select("line", "reason").rows() == [(5, "wrong_field_count"), (7, "wrong_field_count")]
    counts.check()


def test_csv_missing_column_is_a_clear_error(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text("message,label\nhello there,a\n")
    with pytest.raises(IngestError, match=r"raw.csv: column\(s\) \['text'\] not in the CSV header"):
        _ingest(tmp_path, [str(path)])


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(IngestError, match="nope.jsonl: no such file"):
        _ingest(tmp_path, [str(tmp_path / "nope.jsonl")])


def test_parquet_and_hf_dataset_sources(tmp_path):
    import datasets

    pq = tmp_path / "raw.parquet"
    pl.DataFrame({"text": ["from parquet", None, "another one"], "label": ["a", "b", "c"]}).write_parquet(pq)
    hf = tmp_path / "hf"
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    datasets.Dataset.from_dict({"text": ["from hf", "second hf"], "label": [2, 0]}, features=features).save_to_disk(str(hf))
    rows, quarantine, counts = _ingest(tmp_path, [str(pq), str(hf)])
    assert rows.select("input", "label").rows() == [("from parquet", "a"), ("another one", "c"), ("from hf", "c"), ("second hf", "a")]
    assert quarantine.select("line", "reason").rows() == [(2, "missing_field")]
    assert counts.rows_in == 5


def test_row_ids_are_stable_and_unique_for_exact_copies(tmp_path):
    path = tmp_path / "raw.jsonl"
    row = json.dumps({"text": "same text", "label": "a"})
    path.write_text("\n".join([row, row, json.dumps({"text": "other", "label": "b"})]) + "\n")
    first, _, _ = _ingest(tmp_path, [str(path)])
    again, _, _ = _ingest(tmp_path, [str(path)])
    assert first["row_id"].n_unique() == 3
    assert first["row_id"].to_list() == again["row_id"].to_list()


def test_generation_task_derives_the_class_from_the_output(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text('text,mr\nWhat a game,inform(name[X])\nHmm,no act here\n')
    cfg = base_config(tmp_path, [str(path)])
    cfg["task"] = {"kind": "generation", "input_field": "text", "output_field": "mr", "class_pattern": r"^([a-z_]+)\(", "labels": ["inform"]}
    rows, quarantine, _ = ingest(Config.model_validate(cfg))
    assert rows["label"].to_list() == ["inform"]
    assert quarantine["reason"].to_list() == ["no_class"]


def test_bundled_sample_accounts_for_every_record():
    from core.config import load_config

    rows, quarantine, counts = ingest(load_config("configs/banking77.yaml"))
    assert counts.rows_in == rows.height + quarantine.height
    # The sample plants at least one record of each kind of breakage.
    assert set(quarantine["reason"]) >= {
        "invalid_json", "missing_field", "wrong_type", "empty_text", "invalid_utf8",
        "too_large", "unknown_label", "not_an_object", "wrong_field_count",
    }
    assert rows.filter(pl.col("split") == "eval").height == 385


def test_csv_unbalanced_quote_loses_only_its_own_line(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_bytes(b'text,label\r\nfirst row ok,a\r\n"unbalanced quote here,a\nnext row,b\rlast row,c\n')
    rows, quarantine, counts = _ingest(tmp_path, [str(path)])
    assert rows.select("line", "input").rows() == [(2, "first row ok"), (4, "next row"), (5, "last row")]
    assert quarantine.select("line", "reason").rows() == [(3, "malformed_quote")]
    assert counts.rows_in == 4


def _csv(tmp_path, text: str):
    path = tmp_path / "raw.csv"
    path.write_text(text, encoding="utf-8")
    rows, quarantine, counts = _ingest(tmp_path, [str(path)])
    assert counts.rows_in == rows.height + quarantine.height
    return rows.select("line", "input", "label").rows(), quarantine.select("line", "reason").rows()


def test_a_stray_quote_never_merges_two_records(tmp_path):
    """The field count of the merged record is right, so a count check alone let it through as one row with
    the second record's label (text: first message, comma, first label, space, second message)."""
    kept, quarantined = _csv(tmp_path, 'text,label\n"my card has not arrived,a\nhow do I top up a " quote,b\nfine row,c\n')
    assert kept == [(4, "fine row", "c")]
    assert quarantined == [(2, "malformed_quote"), (3, "malformed_quote")]  # both records, each with its line


@pytest.mark.parametrize("bad,detail", [
    ('"closed then text"x,a', "closes, then text follows"),
    ('a quote " in the middle,a', "inside an unquoted field"),
    ('"never closed,a', "never closes"),
])
def test_every_quote_rfc_4180_does_not_allow_quarantines_its_record(tmp_path, bad, detail):
    path = tmp_path / "raw.csv"
    path.write_text(f"text,label\nbefore it,a\n{bad}\nafter it,b\n", encoding="utf-8")
    rows, quarantine, _ = _ingest(tmp_path, [str(path)])
    assert rows.select("line", "input").rows() == [(2, "before it"), (4, "after it")]
    assert quarantine.select("line", "reason").rows() == [(3, "malformed_quote")]
    assert detail in quarantine["detail"][0] and quarantine["raw"][0] == bad


def test_a_quote_all_file_with_a_line_cut_short_keeps_every_other_record(tmp_path):
    kept, quarantined = _csv(tmp_path, '"text","label"\n"first one","a"\n"second cut short","b\n"third one","c"\n"fourth one","a"\n')
    assert kept == [(2, "first one", "a"), (4, "third one", "c"), (5, "fourth one", "a")]
    assert quarantined == [(3, "malformed_quote")]


def test_quoted_newlines_commas_and_doubled_quotes_stay_text(tmp_path):
    kept, quarantined = _csv(tmp_path, 'text,label\n"two\r\nlines, one comma",a\n"say ""hi"" twice",b\n"",c\nlast,"a"\n')
    assert kept == [(2, "two\nlines, one comma", "a"), (4, 'say "hi" twice', "b"), (6, "last", "a")]
    assert quarantined == [(5, "empty_text")]


def test_an_over_long_quoted_field_is_one_record_too_large(tmp_path):
    """A ~200 KB quoted field over two lines: the whole record goes to quarantine, no tail becomes a row."""
    long = "x" * 100_000 + "\n" + "y" * 100_000
    kept, quarantined = _csv(tmp_path, f'text,label\nshort one,a\n"{long}",b\nafter it,c\n')
    assert kept == [(2, "short one", "a"), (5, "after it", "c")]
    assert quarantined == [(3, "too_large")]


def test_control_characters_are_removed_by_normalization():
    from filters.normalize import normalize_text

    out = normalize_text(pl.DataFrame({"input": ["nul\x00 byte\x07 here"], "output": ["a"]}))
    assert out["input"][0] == "nul byte here"


def test_compressed_and_oversized_files(tmp_path):
    import gzip

    rows = b'{"text": "a compressed row", "label": "a"}\n{"text": "another compressed row", "label": "b"}\n'
    packed = tmp_path / "rows.jsonl.gz"
    packed.write_bytes(gzip.compress(rows))
    got, quarantine, _ = _ingest(tmp_path, [str(packed)])
    assert got["input"].to_list() == ["a compressed row", "another compressed row"] and quarantine.height == 0
    # a file beyond ingest.max_file_bytes is an error naming it, compressed or not
    with pytest.raises(IngestError, match=r"rows.jsonl.gz: decompresses to more than ingest.max_file_bytes \(64\)"):
        _ingest(tmp_path, [str(packed)], ingest={"max_file_bytes": 64})
    plain = tmp_path / "rows.jsonl"
    plain.write_bytes(rows)
    with pytest.raises(IngestError, match=r"rows.jsonl: 92 bytes, more than ingest.max_file_bytes \(64\)"):
        _ingest(tmp_path, [str(plain)], ingest={"max_file_bytes": 64})
    # a gzip bomb is read only up to the bound, never expanded in full
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(gzip.compress(b"\n" * 200_000_000))  # 200 MB of newlines in ~200 KB
    with pytest.raises(IngestError, match="decompresses to more than"):
        _ingest(tmp_path, [str(bomb)], ingest={"max_file_bytes": 1_000_000})
