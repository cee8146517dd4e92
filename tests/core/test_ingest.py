"""Ingest: every kind of unusable record lands in quarantine with its reason and line."""

import hashlib
import json
import re
import subprocess
import sys

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


@pytest.mark.parametrize("batch", [1, 2, 50_000])
def test_parquet_and_hf_dataset_sources(tmp_path, batch):
    import datasets

    pq = tmp_path / "raw.parquet"
    pl.DataFrame({"text": ["from parquet", None, "another one"], "label": ["a", "b", "c"]}).write_parquet(pq)
    hf = tmp_path / "hf"
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    datasets.Dataset.from_dict({"text": ["from hf", "second hf"], "label": [2, 0]}, features=features).save_to_disk(str(hf))
    rows, quarantine, counts = _ingest(tmp_path, [str(pq), str(hf)], ingest={"batch_records": batch})
    assert rows.select("input", "label").rows() == [("from parquet", "a"), ("another one", "c"), ("from hf", "c"), ("second hf", "a")]
    assert rows["line"].to_list() == [1, 3, 1, 2]  # row numbers run on across batches
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
    # sha256 of (split, input, output, n), n counting earlier identical rows: ids of existing snapshots stay
    want = [hashlib.sha256(f"train\x1f{t}\x1f{c}\x1f{n}".encode()).hexdigest()[:16]
            for t, c, n in [("same text", "a", 0), ("same text", "a", 1), ("other", "b", 0)]]
    assert first["row_id"].to_list() == want


def test_ingest_stops_with_an_error_naming_the_file_past_its_memory_bound(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text(json.dumps({"text": "a message", "label": "a"}) + "\n")
    with pytest.raises(IngestError, match=r"ingest ran out of memory reading .*raw\.jsonl: [\d,]+ MB resident, past its "
                                          r"bound of 1 MB, ingest\.max_memory_mb \(1\)"):
        _ingest(tmp_path, [str(path)], ingest={"max_memory_mb": 1})
    rows, _, _ = _ingest(tmp_path, [str(path)], ingest={"max_memory_mb": 100_000})
    assert rows.height == 1


UNDER_A_CAP = r"""
import json, resource, sys
from pathlib import Path
import psutil
from core.config import Config
from core.ingest import IngestError, ingest
folder = Path(sys.argv[1])
path = folder / "big.jsonl"
path.write_text("\n".join(json.dumps({"text": f"message number {i} about a card", "label": "a"}) for i in range(400_000)))
cfg = Config.model_validate({"name": "cap", "allow_outside_paths": True,
    "task": {"kind": "classification", "input_field": "text", "output_field": "label"},
    "data": {"train": [{"path": str(path)}]}, "output": {"snapshots": str(folder / "s"), "runs": str(folder / "r")}})
vms = psutil.Process().memory_info().vms
resource.setrlimit(resource.RLIMIT_AS, (vms + 150 * 2**20, resource.RLIM_INFINITY))
try:
    ingest(cfg)
except IngestError as exc:
    print(exc)
    sys.exit(3)
"""


def test_ingest_under_an_address_space_limit_stops_with_an_error_not_an_abort(tmp_path):
    """`ulimit -v` leaves 150 MB for a 20 MB file: ingest stops with its own error, not with
    an allocator's abort (polars' Rust allocator aborts the process when it is refused)."""
    run = subprocess.run([sys.executable, "-c", UNDER_A_CAP, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, run.stderr[-2000:]
    assert re.search(r"ingest ran out of address space reading .*big\.jsonl: [\d,]+ MB of virtual memory, within 128 MB "
                     r"of this process's limit \([\d,]+ MB, `ulimit -v`\)", run.stdout), run.stdout


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


def _rows(tmp_path, name: str, data: bytes, **sections):
    path = tmp_path / name
    path.write_bytes(data)
    rows, quarantine, counts = _ingest(tmp_path, [str(path)], **sections)
    assert counts.rows_in == rows.height + quarantine.height
    return rows.select("line", "input", "label").rows(), quarantine.select("line", "reason").rows()


def test_a_json_array_file_reads_each_element_as_a_record(tmp_path):
    """A `.json` export (pandas' orient=records, json.dump of a list) was one not_an_object record."""
    records = [{"text": "first one", "label": "a"}, {"text": "second one", "label": "b"}, {"text": "third one", "label": "c"}]
    expected = [(1, "first one", "a"), (2, "second one", "b"), (3, "third one", "c")]
    assert _rows(tmp_path, "compact.json", json.dumps(records).encode()) == (expected, [])
    assert _rows(tmp_path, "pretty.json", json.dumps(records, indent=2).encode()) == (expected, [])
    # line is the element's position in the array; a broken element is quarantined alone and
    # the elements after it, each starting its own line as json.dump writes them, are kept
    broken = json.dumps(records, indent=2).replace('"second one"', '"second one', 1).encode()
    kept, quarantined = _rows(tmp_path, "broken.json", broken)
    assert kept == [(1, "first one", "a"), (3, "third one", "c")]
    assert quarantined == [(2, "invalid_json")]
    # a file of one object per line named .json is still JSONL
    assert _rows(tmp_path, "lines.json", b"\n".join(json.dumps(r).encode() for r in records)) == (expected, [])
    # an element that is not an object, and a cut-off array, quarantine with their position
    kept, quarantined = _rows(tmp_path, "mixed.json", b'[{"text": "one here", "label": "a"}, 3,\n{"text": "cut')
    assert kept == [(1, "one here", "a")]
    assert quarantined == [(2, "not_an_object"), (3, "invalid_json")]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_without_a_bom_adds_no_phantom_record(tmp_path, encoding):
    """Decoded as UTF-8, the NUL after the last newline was a line of its own: one invalid_json too many."""
    jsonl = '{"text": "first one", "label": "a"}\n{"text": "second é", "label": "b"}\n'
    assert _rows(tmp_path, "wide.jsonl", jsonl.encode(encoding)) == ([(1, "first one", "a"), (2, "second é", "b")], [])
    csv = "text,label\r\nfirst one,a\r\nsecond é,b\r\n"
    assert _rows(tmp_path, "wide.csv", csv.encode(encoding)) == ([(2, "first one", "a"), (3, "second é", "b")], [])
    # a wide file cut mid-character quarantines its last line, not the file
    kept, quarantined = _rows(tmp_path, "cut.jsonl", jsonl.encode(encoding)[:-5])
    assert kept == [(1, "first one", "a")] and quarantined == [(2, "invalid_utf8")]


def test_hf_classlabel_minus_one_or_none_is_no_label(tmp_path):
    """datasets marks an unlabeled row -1 (or None): int2str raised and the run failed naming no file or row."""
    import datasets

    hf = tmp_path / "hf"
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    datasets.Dataset.from_dict({"text": ["kept one", "unlabeled", "null label", "kept two"], "label": [2, -1, None, 0]},
                               features=features).save_to_disk(str(hf))
    rows, quarantine, counts = _ingest(tmp_path, [str(hf)])
    assert rows.select("line", "label").rows() == [(1, "c"), (4, "a")]
    assert quarantine.select("line", "reason").rows() == [(2, "no_label"), (3, "no_label")]
    assert "-1" in quarantine["detail"][0] and counts.rows_in == 4


def test_labels_are_normalized_like_text(tmp_path):
    """With no fixed label set, `a`, `a` + zero-width space and full-width `ａ` were three classes."""
    lines = [{"text": f"message {i}", "label": label} for i, label in enumerate(["a", "a\u200b", "\uff41", " a\u00ad ", "b\u200e"])]
    data = "\n".join(json.dumps(r, ensure_ascii=False) for r in lines).encode()
    kept, quarantined = _rows(tmp_path, "labels.jsonl", data, task={"labels": None})
    assert [label for _, _, label in kept] == ["a", "a", "a", "a", "b"] and quarantined == []
    # a fixed set is compared in the same spelling, on both sides
    kept, quarantined = _rows(tmp_path, "labels.jsonl", data, task={"labels": ["\uff41", "b"]})
    assert len(kept) == 5 and quarantined == []
    # a classification output is its class: the output the model learns is the label too
    rows, _, _ = _ingest(tmp_path, [str(tmp_path / "labels.jsonl")], task={"labels": None})
    assert rows["output"].to_list() == rows["label"].to_list()
    # a label of invisible characters only is empty, not a class of its own
    assert _rows(tmp_path, "empty.jsonl", b'{"text": "message", "label": "\\u200b"}', task={"labels": None}) == ([], [(1, "empty_output")])


def test_label_filter_compares_normalized_labels():
    from filters.labels import filter_labels

    df = pl.DataFrame({"output": ["a\u200b", "\uff42", "z"], "label": ["a\u200b", "\uff42", "z"], "drop_reason": [None, None, None]},
                      schema_overrides={"drop_reason": pl.String})
    out = filter_labels(df, labels=["a", "b"], output_pattern=None)
    assert out["drop_reason"].to_list() == [None, None, "unknown_label"]


def test_normalization_normalizes_the_label_column():
    from filters.normalize import normalize_text

    out = normalize_text(pl.DataFrame({"input": ["x"], "output": ["\uff41\u200b"], "label": ["\uff41\u200b"]}))
    assert out["label"].to_list() == ["a"]


def _ingest_in_thread(config, path):
    """ingest with a deadline: a reader that blocks (a FIFO) must not hang the suite."""
    import threading

    result = {}

    def run():
        try:
            result["value"] = ingest(config)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():
        with open(path, "wb"):  # a writer end lets the blocked reader return before the test fails
            pass
    assert not t.is_alive(), f"ingest of {path} still reading after 20 s"
    return result


def test_a_non_regular_file_is_refused_up_front(tmp_path):
    """A FIFO blocked forever, /dev/zero through a symlink was read forever (its size reads as 0).

    Config validation refuses them too; the path is swapped after it here, as it can be
    between `config check` and the run, so the test is about where ingest opens the file.
    """
    import os

    for name, make, kind in (("fifo.jsonl", os.mkfifo, "a FIFO (named pipe)"),
                             ("zero.jsonl", lambda p: p.symlink_to("/dev/zero"), "a character device")):
        path = tmp_path / name
        path.write_text('{"text": "regular for now", "label": "a"}\n')
        config = Config.model_validate(base_config(tmp_path, [str(path)]))
        path.unlink()
        make(path)
        result = _ingest_in_thread(config, path)
        assert isinstance(result.get("error"), IngestError), result
        assert f"{name}: {kind}, not a regular file" in str(result["error"])
    (tmp_path / "folder.csv").mkdir()
    cfg = base_config(tmp_path, [])
    cfg["data"]["train"] = [{"path": str(tmp_path / "folder.csv"), "format": "csv"}]
    with pytest.raises(IngestError, match="folder.csv: a folder, not a regular file"):
        ingest(Config.model_validate(cfg))


def test_duplicate_task_keys_in_a_record_quarantine_it(tmp_path):
    """`{"text": "a", "text": "b"}`: the parser kept the last value and the first was lost without a word."""
    kept, quarantined = _rows(tmp_path, "dup.jsonl", b'{"text": "first value", "text": "second value", "label": "a"}\n'
                              b'{"text": "fine one", "label": "b", "label": "c"}\n'
                              b'{"text": "other keys may repeat", "label": "a", "x": 1, "x": 2, "meta": {"text": 1}}\n')
    assert kept == [(3, "other keys may repeat", "a")]
    assert quarantined == [(1, "duplicate_key"), (2, "duplicate_key")]


def test_concatenated_files_bom_and_header_in_the_middle(tmp_path):
    """`cat a b > c`: the second file's BOM starts a line and its CSV header becomes a record."""
    bom = "\ufeff"
    jsonl = f'{bom}{{"text": "from a", "label": "a"}}\n{bom}{{"text": "from b", "label": "b"}}\n'
    assert _rows(tmp_path, "cat.jsonl", jsonl.encode()) == ([(1, "from a", "a"), (2, "from b", "b")], [])
    csv = f"{bom}text,label\nfrom a,a\n{bom}text,label\nfrom b,b\n"
    assert _rows(tmp_path, "cat.csv", csv.encode()) == ([(2, "from a", "a"), (4, "from b", "b")], [(3, "repeated_header")])


def test_a_lone_surrogate_escape_in_a_json_array_is_invalid_utf8(tmp_path):
    """json.loads (arrays) takes "\\ud800" where orjson (JSON Lines) refuses it: storing its raw text raised (found by the fuzzer)."""
    data = b'[{"text": "\\ud800card", "label": "a"}, {"text": "fine one", "label": "b"}]'
    kept, quarantined = _rows(tmp_path, "lone.json", data)
    assert kept == [(2, "fine one", "b")] and quarantined == [(1, "invalid_utf8")]


def test_a_quote_left_open_never_runs_over_the_records_after_it(tmp_path):
    """A field opened on line 2 and closed by a lone quote two lines later is valid RFC 4180, and was read as one
    row with the last line's label: the good record between them vanished into it (found by the fuzzer)."""
    kept, quarantined = _csv(tmp_path, 'text,label\n"my card never came,a\nfine one,b\nlater one",c\nlast one,a\n')
    assert kept == [(3, "fine one", "b"), (5, "last one", "a")]
    assert quarantined == [(2, "malformed_quote"), (4, "malformed_quote")]
    # run on into the wrong field count: the three lines were one wrong_field_count record, the good one lost in it
    kept, quarantined = _csv(tmp_path, 'text,label\n"opened here,a\nfine one,b\nlater",c,extra\nafter it,c\n')
    assert kept == [(3, "fine one", "b"), (5, "after it", "c")]
    assert quarantined == [(2, "malformed_quote"), (4, "malformed_quote")]
    # the same with no fixed label set: a line of the header's field count is a record
    cfg = base_config(tmp_path, [str(tmp_path / "raw.csv")], task={"labels": None})
    rows, quarantine, _ = ingest(Config.model_validate(cfg))
    assert rows["line"].to_list() == [3, 5] and quarantine.select("line", "reason").rows() == [(2, "malformed_quote"), (4, "malformed_quote")]
    # a record with a quoted newline in a field too many is one wrong_field_count record
    kept, quarantined = _csv(tmp_path, 'text,label\ncard,a,"\n"\nafter it,c\n')
    assert kept == [(4, "after it", "c")] and quarantined == [(2, "wrong_field_count")]
    # a message over several lines, commas in them, is still one record
    kept, quarantined = _csv(tmp_path, 'text,label\n"Dear team,\nmy card, the new one\ndid not come",a\nnext,b\n')
    assert kept == [(2, "Dear team,\nmy card, the new one\ndid not come", "a"), (5, "next", "b")] and quarantined == []


def test_a_fixed_label_set_is_in_the_labels_spelling_everywhere(tmp_path):
    """task.labels is what balancing plans and evaluation scores against: `ａ` there and `a` in rows were two classes."""
    from pydantic import ValidationError

    cfg = Config.model_validate(base_config(tmp_path, ["x.jsonl"], task={"labels": ["\uff41", "b\u200b", " top  up "]}))
    assert cfg.task.labels == ["a", "b", "top up"] and cfg.label_set() == ["a", "b", "top up"]
    with pytest.raises(ValidationError, match="labels contains duplicates"):
        Config.model_validate(base_config(tmp_path, ["x.jsonl"], task={"labels": ["a", "\uff41"]}))
    with pytest.raises(ValidationError, match="blank or invisible characters only"):
        Config.model_validate(base_config(tmp_path, ["x.jsonl"], task={"labels": ["a", "\u200b"]}))
    (tmp_path / "labels.json").write_text(json.dumps(["\uff41", "a", "b"]))
    cfg = Config.model_validate(base_config(tmp_path, ["x.jsonl"], task={"labels": None, "labels_file": str(tmp_path / "labels.json")}))
    assert cfg.label_set() == ["a", "b"]


def test_a_utf16_file_starting_with_nul_is_not_read_as_utf32(tmp_path):
    """FF FE 00 00 is UTF-32-LE's mark, and UTF-16-LE's mark before a NUL: the whole file was invalid_utf8 (found by the fuzzer)."""
    lines = '\x00{"text": "first one", "label": "a"}\n{"text": "second one", "label": "b"}\n'
    kept, quarantined = _rows(tmp_path, "nul.jsonl", b"\xff\xfe" + lines.encode("utf-16-le"))
    assert kept == [(2, "second one", "b")] and quarantined == [(1, "invalid_json")]
    # a UTF-32 file cut mid-character is still UTF-32: its last line is quarantined, the rest kept
    for cut in (1, 2, 3):
        kept, quarantined = _rows(tmp_path, "cut32.jsonl", lines[1:].encode("utf-32")[:-4 - cut])
        assert kept == [(1, "first one", "a")] and quarantined == [(2, "invalid_utf8")]


def test_a_stray_quote_in_a_json_array_breaks_only_its_element(tmp_path):
    """`"{"` parsed as a string element and the rest of the object as another; a quote at an inner line's
    start looked like the next element (both found by the fuzzer)."""
    data = b'[\n"{"text": "one here", "label": "a"},\n{"text": "fine one", "label": "b"}\n]'
    assert _rows(tmp_path, "stray.json", data) == ([(2, "fine one", "b")], [(1, "invalid_json")])
    data = b'[\n  {\n  "  "text": "one here",\n    "label": "a"\n  },\n  {\n    "text": "fine one",\n    "label": "b"\n  }\n]'
    assert _rows(tmp_path, "inner.json", data) == ([(2, "fine one", "b")], [(1, "invalid_json")])
