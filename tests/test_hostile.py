"""Hostile and broken inputs through the whole curation pipeline, the config loader and the template linter.

The corpus is tests/hostile/ (written by tests/hostile/make_corpus.py; expectations in
expect.yaml). Point HOSTILE_CORPUS at another folder with the same layout (data/,
configs/, templates/, an optional expect.yaml) to run an unseen corpus through the
same checks: no crash; a clear error naming the file (and key, or line), or a
quarantine/filter row with a reason; rows in = kept + filtered + quarantined at every stage.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
import yaml

from core.config import ConfigError, load_config
from core.ingest import IngestError
from core.snapshot import read_manifest, verify_snapshot
from synthesis.templates import lint_template
from tests.conftest import ROOT, base_config, curate_steps, write_config

CORPUS = Path(os.environ.get("HOSTILE_CORPUS", ROOT / "tests" / "hostile")).resolve()
EXPECT = yaml.safe_load((CORPUS / "expect.yaml").read_text()) if (CORPUS / "expect.yaml").is_file() else {}
DATA = sorted(p for p in (CORPUS / "data").glob("*") if p.is_file()) if (CORPUS / "data").is_dir() else []
CONFIGS = sorted((CORPUS / "configs").glob("*.y*ml")) if (CORPUS / "configs").is_dir() else []
TEMPLATES = sorted((CORPUS / "templates").glob("*.jinja")) if (CORPUS / "templates").is_dir() else []


def test_the_corpus_covers_at_least_twenty_kinds():
    assert len(DATA) + len(CONFIGS) + len(TEMPLATES) >= 20, CORPUS


def _curate(config_path: Path) -> Path:
    return curate_steps(config_path)


def _hostile_config(tmp_path: Path, path: Path) -> Path:
    cfg = base_config(tmp_path, [str(path)], ingest={"max_field_bytes": 100_000})
    cfg["output"]["cache"] = str(tmp_path / "cache")
    return write_config(tmp_path, cfg)


def _accounting(folder: Path) -> dict:
    manifest = read_manifest(folder)
    stages = manifest["stages"]
    for stage in stages:
        assert stage["kept"] + sum(stage["filtered"].values()) + sum(stage["quarantined"].values()) == stage["rows_in"], stage
    for before, after in zip(stages, stages[1:]):
        assert after["rows_in"] == before["kept"], (before["stage"], after["stage"])
    rows = manifest["rows"]
    assert stages[0]["rows_in"] == rows["train"] + rows["eval"] + rows["rejected"] + rows["quarantine"]
    return manifest


@pytest.mark.parametrize("path", DATA, ids=[p.name for p in DATA])
def test_hostile_data_file_through_the_pipeline(path, tmp_path, capfd):
    expect = EXPECT.get("data", {}).get(path.name, {})
    config = _hostile_config(tmp_path, path)
    try:
        folder = _curate(config)
    except (IngestError, ConfigError) as exc:  # a whole-file problem: a clear error naming the file
        assert str(path) in str(exc) or path.name in str(exc), exc
        assert "error" in expect, f"unexpected error: {exc}"
        assert expect["error"] in str(exc)
        return
    assert "error" not in expect, f"expected an error containing {expect['error']!r}"
    verify_snapshot(folder)
    manifest = _accounting(folder)
    quarantine = pl.read_parquet(folder / "quarantine.parquet")
    rejected = pl.read_parquet(folder / "rejected.parquet")
    # every row that did not make it has a stable reason, and the quarantine says where it was
    assert quarantine["reason"].null_count() == 0 and rejected["reason"].null_count() == 0
    assert quarantine["line"].null_count() == 0 and (quarantine["source"] == str(path)).all()
    got_q = dict(quarantine.group_by("reason").len().iter_rows())
    got_f = dict(rejected.group_by("reason").len().iter_rows())
    for reason, n in expect.get("quarantine", {}).items():
        assert got_q.get(reason, 0) == n, (reason, got_q)
    for reason, n in expect.get("filtered", {}).items():
        assert got_f.get(reason, 0) == n, (reason, got_f)
    if "kept" in expect:
        assert manifest["rows"]["train"] == expect["kept"], (manifest["rows"], got_q, got_f)
    train = pl.read_parquet(folder / "train.parquet")
    assert train["row_id"].n_unique() == train.height
    assert not train["input"].str.contains("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]").any()  # control characters normalized away
    # nothing of a bad record's content is printed at default verbosity
    out = capfd.readouterr()
    for raw in quarantine["raw"].to_list():
        snippet = raw.strip()[:40]
        if len(snippet) >= 12:
            assert snippet not in out.out + out.err


def test_a_ten_megabyte_field_is_quarantined_not_loaded_into_rows(tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_text('{"text": "fine row here", "label": "a"}\n{"text": "' + "x" * 10_000_000 + '", "label": "b"}\n')
    folder = _curate(_hostile_config(tmp_path, path))
    _accounting(folder)
    quarantine = pl.read_parquet(folder / "quarantine.parquet")
    assert quarantine["reason"].to_list() == ["too_large"] and quarantine["line"].to_list() == [2]
    raw = quarantine["raw"][0]
    assert len(raw) < 4200 and int(raw.rsplit("[", 1)[1].split()[0]) >= 10_000_000  # capped, with the full length
    assert read_manifest(folder)["rows"]["train"] == 1


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_hostile_config_is_a_clear_error(path):
    expect = EXPECT.get("configs", {}).get(path.name, {})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg.splitlines()[0]  # names the file first
    for fragment in expect.get("errors", []):
        assert fragment in msg, (fragment, msg)


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.name for p in TEMPLATES])
def test_hostile_template_is_reported_with_file_and_line(path):
    from synthesis.templates import TemplateProblemError, check_template, load_template

    expect = EXPECT.get("templates", {}).get(path.name, {})
    problems = lint_template(path, config=load_config("configs/banking77.yaml"))
    errors = [p for p in problems if p.severity == "error"]
    assert errors, f"{path.name}: no problem found"
    for p in errors:
        assert str(p).startswith(str(path)), str(p)
    codes = {p.code for p in errors}
    assert set(expect.get("codes", [])) <= codes, codes
    # generation refuses to start on it: loading and checking raise before any model call
    with pytest.raises((TemplateProblemError, ValueError)):
        check_template(load_template(path), config=load_config("configs/banking77.yaml"))
