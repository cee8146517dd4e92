"""The curation flow end to end on the bundled samples (real Prefect, ephemeral API)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

import core.config as core_config
from core.review import record_review
from core.snapshot import load_dataset, read_manifest, verify_snapshot
from flows.curate_and_train import ReviewRejected, curate_and_train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _run(config, tmp_path, *extra):
    overrides = ["allow_outside_paths=true", f"output.snapshots={tmp_path / 'snapshots'}", f"output.runs={tmp_path / 'runs'}", f"output.cache={tmp_path / 'cache'}", *extra]
    return Path(curate_and_train(config=config, overrides=overrides)["snapshot"])


def _check_accounting(folder):
    manifest = read_manifest(folder)
    for stage in manifest["stages"]:
        out = stage["kept"] + sum(stage["filtered"].values()) + sum(stage["quarantined"].values())
        assert out == stage["rows_in"], stage
    stages = manifest["stages"]
    for before, after in zip(stages, stages[1:]):
        assert after["rows_in"] == before["kept"]
    rows = manifest["rows"]
    assert stages[0]["rows_in"] == rows["train"] + rows["eval"] + rows["rejected"] + rows["quarantine"]
    return manifest


def test_banking77_sample_end_to_end(harness, tmp_path):
    folder = _run("configs/banking77.yaml", tmp_path, "train.enabled=false", "synthesis.enabled=false")  # training: tests/flows/test_flow_training.py
    manifest = _check_accounting(folder)
    verify_snapshot(folder)
    rejected = pl.read_parquet(folder / "rejected.parquet")
    reasons = set(rejected["reason"])
    assert {"exact_duplicate", "near_duplicate", "label_conflict", "eval_contamination", "blocklisted", "too_short"} <= reasons
    train = pl.read_parquet(folder / "train.parquet")
    eval_ids = set(pl.read_parquet(folder / "eval.parquet")["row_id"])
    # Every folded row leads, through its lineage, to a row in the snapshot (or one the
    # balance stage capped later, which is itself in the rejected table with its reason).
    parent = dict(zip(rejected["row_id"], rejected["duplicate_of"]))
    capped = set(rejected.filter(pl.col("reason") == "class_cap")["row_id"])
    kept_ids = set(train["row_id"]) | eval_ids | capped
    for row in rejected.filter(pl.col("reason").is_in(["exact_duplicate", "near_duplicate", "eval_contamination"])).iter_rows(named=True):
        node, hops = row["duplicate_of"], 0
        while node not in kept_ids and hops < 10:
            node, hops = parent.get(node), hops + 1
        assert node in kept_ids, row
    near = rejected.filter(pl.col("reason") == "near_duplicate")
    assert near["cluster"].str.starts_with("n").all() and near["detail"].str.contains("jaccard").all()
    topup = near.filter(pl.col("input").str.contains("top.up", literal=False))
    assert topup.height >= 5  # "top-up" / "top up" variants folded
    assert train["row_id"].n_unique() == train.height
    everything = pl.concat([train.select("input", "pii"), rejected.select("input", "pii")])
    assert everything.filter(pl.col("pii").list.len() > 0).height >= 20  # redacted and marked, not dropped for it
    assert "pii" not in set(rejected["reason"])
    assert not everything["input"].str.contains("@example.com").any()
    assert len(manifest["class_distribution"]["train"]) == 77
    assert manifest["model"].endswith("SmolLM2-135M-Instruct")
    assert load_dataset(folder)["train"].num_rows == train.height

    # Same inputs, same config: the same snapshot, byte for byte.
    again = _run("configs/banking77.yaml", tmp_path, "train.enabled=false", "synthesis.enabled=false")
    assert again == folder
    # A changed setting gives a new snapshot, and the index lists both in order.
    changed = _run("configs/banking77.yaml", tmp_path, "train.enabled=false", "synthesis.enabled=false", "clean.min_chars=20")
    assert changed != folder
    index = [json.loads(l)["snapshot_id"] for l in (folder.parent / "index.jsonl").read_text().splitlines()]
    assert index[-1] == changed.name


def test_viggo_generation_task_end_to_end(harness, tmp_path):
    folder = _run("configs/viggo.yaml", tmp_path)
    manifest = _check_accounting(folder)
    train = pl.read_parquet(folder / "train.parquet")
    assert set(train["label"]) <= set(manifest["config"]["task"]["labels"])
    assert train["output"].str.contains(r"^[a-z_]+\(").all()
    rejected = pl.read_parquet(folder / "rejected.parquet")
    assert "invalid_output" in set(rejected["reason"])


def test_cli_run_prints_the_summary(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "curate", "run", "--config", "configs/viggo.yaml",
         "--set", "allow_outside_paths=true", "--set", f"output.snapshots={tmp_path / 's'}", "--set", f"output.runs={tmp_path / 'r'}"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rows per stage" in out.stdout and "class mix" in out.stdout
    assert str(tmp_path / "s" / "viggo") in out.stdout.replace("\n", "")


def test_cli_reports_config_errors_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nwhat: 1\n")
    out = subprocess.run([sys.executable, "-m", "curate", "run", "--config", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "what: unknown key" in out.stderr and "Traceback" not in out.stderr


def test_the_config_is_read_once_per_run_and_every_stage_reports_its_cache(harness, tmp_path, monkeypatch):
    reads = []
    read = core_config._read_raw
    monkeypatch.setattr(core_config, "_read_raw", lambda path: reads.append(path) or read(path))
    overrides = ["allow_outside_paths=true", f"output.snapshots={tmp_path / 'snap'}", f"output.runs={tmp_path / 'runs'}",
                 f"output.cache={tmp_path / 'cache'}"]
    first = curate_and_train(config="configs/viggo.yaml", overrides=overrides)
    assert len(reads) == 1  # the flow's own load; every task got the resolved config
    names = ["01-ingest", "02-clean", "03-dedupe", "04-balance", "05-synthesize", "snapshot", "diff"]
    assert [s for s, _, _ in first["stages"]] == names
    assert [c for _, c, _ in first["stages"]] == ["computed"] * 7
    assert all(seconds is not None and seconds >= 0 for _, _, seconds in first["stages"])  # each stage's own time
    again = curate_and_train(config="configs/viggo.yaml", overrides=overrides)
    assert [c for _, c, _ in again["stages"]] == ["hit"] * 6 + ["computed"] and again["snapshot"] == first["snapshot"]
    record = json.loads(sorted((tmp_path / "runs" / "viggo").glob("*/run.json"))[-1].read_text())
    assert [s["cache"] for s in record["stages"]] == ["hit"] * 5
    assert Path(again["record"]) == sorted((tmp_path / "runs" / "viggo").glob("*/run.json"))[-1]
    # the run's own log: a start and an end line per stage, with the cache state and row counts
    log = (Path(again["record"]).parent / "run.log").read_text()
    for stage in ("ingest", "clean", "dedupe", "balance", "synthesize", "snapshot", "diff"):
        assert f"| {stage}: started" in log
    assert re.search(r"\| ingest: hit in [0-9.]+s \| \d+ rows in, \d+ kept", log)
    assert re.search(r"\| snapshot: hit in [0-9.]+s \| [0-9a-f]{12}: train \d+, eval \d+", log)


def test_in_process_review_gate_stops_until_approved(harness, tmp_path):
    overrides = ["allow_outside_paths=true", f"output.snapshots={tmp_path / 'snapshots'}", f"output.runs={tmp_path / 'runs'}", f"output.cache={tmp_path / 'cache'}"]
    # no API URL, as a `curate run` without a server: the ephemeral API (the harness's server stands in for it),
    # where nobody could answer a pause; test_deployment pauses on a server
    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(ReviewRejected, match="awaits review"):
        curate_and_train(config="configs/viggo.yaml", overrides=overrides, require_review=True)
    folder = next((tmp_path / "snapshots" / "viggo").glob("*/manifest.json")).parent
    record_review(folder, "reject", by="ana", note="too few requests")
    with pytest.raises(ReviewRejected, match="rejected by ana"):
        curate_and_train(config="configs/viggo.yaml", overrides=overrides, require_review=True)
    record_review(folder, "approve", by="ben")
    assert Path(curate_and_train(config="configs/viggo.yaml", overrides=overrides, require_review=True)["snapshot"]) == folder
