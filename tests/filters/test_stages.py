"""The dedupe stage as the pipeline runs it: exact, then near-duplicate, with lineage."""

import polars as pl

from core.config import Config
from filters.dedupe import dedupe
from tests.conftest import base_config


def _rows(data):
    return pl.DataFrame(
        [
            {"row_id": f"r{i}", "split": s, "source": "x", "line": i + 1, "input": t, "output": l, "label": l, "pii": [], "synthetic": False}
            for i, (s, t, l) in enumerate(data)
        ],
        schema_overrides={"pii": pl.List(pl.String)},
    )


def _config(tmp_path, **near):
    cfg = base_config(tmp_path, ["x.jsonl"])
    cfg["task"]["labels"] = ["a", "b"]
    cfg["dedupe"] = {"near": near}
    return Config.model_validate(cfg)


ROWS = [
    ("train", "How do I top up my account with a cheque please", "a"),   # r0 kept
    ("train", "how do I top-up my account with a cheque please?", "a"),  # r1 near dup of r0
    ("train", "How do I top up my account with a cheque please", "a"),   # r2 exact dup of r0
    ("train", "Has my transfer to my savings gone through yet", "a"),    # r3 conflict with r4
    ("train", "Has my transfer to my savings gone through yet?", "b"),   # r4
    ("train", "What is the exchange rate for euros to pounds today", "b"),  # r5 leaks eval r7
    ("train", "Where can I find the nearest cash machine to me", "b"),   # r6 unique
    ("eval", "what is the exchange rate for euros to pounds today?", "b"),  # r7 never changes
]


def test_near_duplicates_conflicts_and_contamination_with_lineage(tmp_path):
    kept, dropped, counts = dedupe(_rows(ROWS), _config(tmp_path))
    assert kept["row_id"].to_list() == ["r0", "r6", "r7"]
    by_id = {r["row_id"]: r for r in dropped.iter_rows(named=True)}
    assert by_id["r2"]["reason"] == "exact_duplicate" and by_id["r2"]["duplicate_of"] == "r0"
    assert by_id["r1"]["reason"] == "near_duplicate" and by_id["r1"]["duplicate_of"] == "r0"
    assert by_id["r1"]["cluster"] == "nr0" and "jaccard" in by_id["r1"]["detail"]
    assert by_id["r3"]["reason"] == by_id["r4"]["reason"] == "label_conflict"
    assert by_id["r3"]["cluster"] == by_id["r4"]["cluster"]
    assert by_id["r5"]["reason"] == "eval_contamination" and by_id["r5"]["duplicate_of"] == "r7"
    assert counts.filtered == {"exact_duplicate": 1, "near_duplicate": 1, "label_conflict": 2, "eval_contamination": 1}
    assert counts.by_split["eval"]["kept"] == 1


def test_conflicting_cluster_can_keep_one_flagged_row(tmp_path):
    kept, dropped, _ = dedupe(_rows(ROWS), _config(tmp_path, on_conflict="keep_flagged"))
    assert "r3" in kept["row_id"].to_list()
    assert dropped.filter(pl.col("row_id") == "r4")["reason"].to_list() == ["near_duplicate"]


def test_near_dedupe_can_be_turned_off(tmp_path):
    kept, dropped, counts = dedupe(_rows(ROWS), _config(tmp_path, enabled=False))
    assert counts.filtered == {"exact_duplicate": 1}  # r5 differs from the eval row by case and "?"
    assert "r1" in kept["row_id"].to_list()


def test_threshold_is_respected(tmp_path):
    kept, _, _ = dedupe(_rows(ROWS), _config(tmp_path, threshold=1.0))
    assert "r1" not in kept["row_id"].to_list()  # identical shingle sets: Jaccard 1.0
    rows = _rows([("train", "my card was declined at the shop yesterday", "a"), ("train", "my card was declined at the restaurant yesterday evening", "a")])
    kept, _, _ = dedupe(rows, _config(tmp_path, threshold=0.95))
    assert kept.height == 2
