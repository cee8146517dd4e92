"""Learning curves: nested subsets (real split function) and the curve files (train/evaluate stubbed)."""

from __future__ import annotations

import json

from core.train_config import TrainConfig
from tests.trainers import make_snapshot
from trainers.curves import learning_curve
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
