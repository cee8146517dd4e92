"""Data-parallel engines on Ray (core/engine_pool.py): each call's rows split over engines, answered as one engine answers them."""

from __future__ import annotations

import json

import pytest

from core.config import EngineConfig, load_config
from core.engine_pool import DataParallel, core_slices, split_evenly
from core.model import DEFAULT_MODEL_DIR, prepare_model
from tests.conftest import curate_steps
from trainers.evaluate import evaluate


def test_split_evenly_covers_the_range_in_order():
    assert split_evenly(5, 2) == [(0, 3), (3, 5)]
    assert split_evenly(2, 4) == [(0, 1), (1, 2)]  # no empty part goes to an engine
    assert split_evenly(0, 3) == []
    for n in range(0, 40):
        for parts in range(1, 7):
            runs = split_evenly(n, parts)
            assert [i for a, b in runs for i in range(a, b)] == list(range(n))
            assert max((b - a for a, b in runs), default=0) - min((b - a for a, b in runs), default=0) <= 1


def test_core_slices_give_each_engine_its_own_cores():
    assert core_slices([0, 1], 2) == [[0], [1]]
    assert core_slices([3, 0, 1, 2], 2) == [[0, 1], [2, 3]]
    assert core_slices(range(8), 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert core_slices([0, 1], 3) == [[0], [1], [0]]  # more engines than cores: they share, in turn


def test_data_parallel_only_on_ray_with_two_engines_or_more():
    assert DataParallel.from_config(load_config("configs/banking77.yaml")) is None
    assert DataParallel.from_config(load_config("configs/banking77.yaml", ["runner.engines=2"])) is None  # local runner
    assert DataParallel.from_config(load_config("configs/banking77.yaml", ["runner.kind=ray"])) is None  # one engine
    dp = DataParallel.from_config(load_config("configs/banking77.yaml", ["runner.kind=ray", "runner.engines=4",
                                                                        "runner.engine_gpus=1", "runner.num_cpus=2"]))
    assert dp == DataParallel(engines=4, gpus=1, cpus=0, address=None, num_cpus=2)


@pytest.mark.slow
def test_an_evaluation_on_two_ray_engines_equals_the_one_engine_evaluation(tmp_path):
    """The base model zero-shot, free and guided, on 24 eval rows: one engine in this process, then two on Ray actors.

    float32: the CPU kernels' bf16 batched sums can differ in the last bits with a batch's
    make-up (docs/scaling.md); in float32 greedy answers do not move.
    """
    snap = curate_steps("configs/banking77.yaml", ["allow_outside_paths=true", f"output.snapshots={tmp_path / 'snap'}",
                                                   f"output.cache={tmp_path / 'cache'}", "synthesis.enabled=false"])
    kw = dict(base_model=prepare_model(DEFAULT_MODEL_DIR), baseline=True, shots=0, max_examples=24, guided=True,
              base_guided=True, seed=0, engine_config=EngineConfig(dtype="float32", gpu_memory_utilization=0.1))
    one = evaluate(None, snap, out_dir=tmp_path / "one", **kw)
    two = evaluate(None, snap, out_dir=tmp_path / "two", parallel=DataParallel(engines=2, num_cpus=2), **kw)

    assert [e["engines"] for e in one["engine_args"]] == [1] and [e["engines"] for e in two["engine_args"]] == [2]
    assert list(two["systems"]) == ["base zero-shot", "base zero-shot, guided choice"]
    assert two["systems"] == one["systems"]
    preds = [[json.loads(line) for line in (tmp_path / side / "predictions.jsonl").read_text().splitlines()]
             for side in ("one", "two")]
    # the same answers, row for row; their probabilities to the last bits a batch's make-up can move
    confidence = [[row.pop("confidence") for row in side] for side in preds]
    assert preds[0] == preds[1] and len(preds[0]) == 24
    for a, b in zip(*confidence):
        assert a.keys() == b.keys() == set(two["systems"])
        assert all(b[k] == pytest.approx(a[k], rel=1e-3) for k in a)
    guided = [row["base zero-shot, guided choice"] for row in preds[1]]
    assert set(guided) <= set(json.loads(open("data/banking77/categories.json").read()))  # every answer a label
