"""A run whose train split comes out empty (every record quarantined) refuses to train, with a message
that says why, instead of a trainer's StopIteration after two retries; the snapshot is still written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import base_config, write_config

pytestmark = pytest.mark.slow  # a real Prefect run (ephemeral API)


def test_training_on_an_empty_train_split_is_refused_with_a_message(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": f"message number {i}", "label": "zzz"}) + "\n" for i in range(6)))
    cfg = base_config(tmp_path, [str(train)], output={"cache": str(tmp_path / "cache")})
    cfg["train"] = {"enabled": True, "output_dir": str(tmp_path / "adapters")}
    out = subprocess.run([sys.executable, "-m", "curate", "run", "--config", str(write_config(tmp_path, cfg))],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stderr[-3000:]
    error = " ".join(out.stderr[out.stderr.index("error:"):].split())
    assert error.startswith("error: NothingToTrain: snapshot ") and "has no train rows (6 quarantined, 0 rejected" in error, error
    assert "StopIteration" not in out.stderr and "Traceback" not in error
    assert not (tmp_path / "adapters").exists()  # no trainer was started
    snapshots = list((tmp_path / "snapshots" / "t").glob("*/manifest.json"))
    assert len(snapshots) == 1 and json.loads(snapshots[0].read_text())["rows"]["quarantine"] == 6
