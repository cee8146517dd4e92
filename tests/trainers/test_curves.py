"""Learning curves and sweeps: nested subsets (real split function), the grid, the report files (train/evaluate
stand-ins; `curate sweep` for real: tests/trainers/test_qlora.py)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from core.train_config import TrainConfig
from tests.trainers import make_snapshot
from trainers.curves import learning_curve, point_config, sweep
from trainers.qlora import split_rows


def test_fractions_are_nested_and_validation_is_fixed():
    rows = [{"row_id": f"r{i:03d}", "input": "x", "output": "y"} for i in range(100)]
    cfg = TrainConfig(val_size=10)
    subsets = {f: split_rows(rows, cfg.model_copy(update={"train_fraction": f})) for f in (0.25, 0.5, 1.0)}
    ids = {f: [r["row_id"] for r in tr] for f, (tr, _) in subsets.items()}
    assert [len(ids[f]) for f in (0.25, 0.5, 1.0)] == [23, 45, 90]
    assert ids[0.5][:23] == ids[0.25] and ids[1.0][:45] == ids[0.5]
    vals = {tuple(r["row_id"] for r in v) for _, v in subsets.values()}
    assert len(vals) == 1 and not set(next(iter(vals))) & set(ids[1.0])


def test_learning_curve_writes_json_and_png(tmp_path):
    snap = make_snapshot(tmp_path / "snap")
    calls = []

    def fake_train(snapshot, model, cfg, task, out):
        rows, _ = split_rows([{"row_id": str(i)} for i in range(40)], cfg)
        out.mkdir(parents=True)
        (out / "train_meta.json").write_text(json.dumps({"train_rows": len(rows)}))
        calls.append(cfg.train_fraction)
        return out

    def fake_eval(adapter, snapshot, **kw):
        acc = len(calls) / 4
        return {"task_kind": "classification",
                "systems": {"tuned": {"accuracy": acc, "macro_f1": acc / 2, "format_compliance": 1.0}}}

    res = learning_curve(snap, "unused", TrainConfig(val_size=4), tmp_path / "curves",
                         train_fn=fake_train, evaluate_fn=fake_eval)
    assert calls == [0.25, 0.5, 1.0]
    assert [p["train_examples"] for p in res["points"]] == [9, 18, 36]
    assert (tmp_path / "curves" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "curves" / "curves.json").read_text())["points"][2]["metrics"]["accuracy"] == 0.75


def test_a_sweep_trains_every_point_of_the_grid_and_reports_memory_and_speed(tmp_path):
    snap = make_snapshot(tmp_path / "snap")
    seen = []

    def fake_train(snapshot, model, cfg, task, out):
        seen.append((cfg.learning_rate, cfg.lora_r))
        out.mkdir(parents=True)
        (out / "train_meta.json").write_text(json.dumps({
            "train_rows": 28, "global_step": 4, "peak_memory_mb": 100.0 * cfg.lora_r, "fit_seconds": 2.0,
            "train_tokens": 1000, "train_loss": [3.0, 2.0]}))
        return out

    def fake_eval(adapter, snapshot, **kw):
        assert kw["merged"] is True  # --merged reaches every point's evaluation
        lr, r = seen[-1]
        return {"task_kind": "classification",
                "systems": {"tuned": {"accuracy": lr * 100 + r / 100, "macro_f1": lr * 100, "format_compliance": 1.0}}}

    grid = {"learning_rate": [1e-3, 4e-3], "lora_r": [8, 16]}
    res = sweep(snap, "unused", TrainConfig(val_size=4), tmp_path / "sweep", grid=grid, merged=True, train_fn=fake_train,
                evaluate_fn=fake_eval)
    assert seen == [(1e-3, 8), (1e-3, 16), (4e-3, 8), (4e-3, 16)]  # every combination, the last key fastest
    assert [p["peak_memory_mb"] for p in res["points"]] == [800.0, 1600.0, 800.0, 1600.0]
    assert all(p["tokens_per_s"] == 500.0 for p in res["points"])
    assert res["best"] == {"learning_rate": 4e-3, "lora_r": 8}  # the first of the best macro-F1
    md = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| learning_rate=0.004, lora_r=16 | 0.560 | 0.400 | 1.000 | 1600 | 500 | 2 | 2.0000 |" in md
    assert (tmp_path / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_a_sweep_point_is_validated_as_a_config_file_would_be():
    with pytest.raises(ValueError, match="not a training parameter: learning_rat"):
        point_config(TrainConfig(), {"learning_rat": 1e-3})
    with pytest.raises(ValidationError):
        point_config(TrainConfig(), {"method": "dora"})
    assert point_config(TrainConfig(), {"learning_rate": "1e-4"}).learning_rate == 1e-4  # as YAML reads "1e-4"
