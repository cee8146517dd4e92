import polars as pl
import pytest

from core.report import plot_class_mix
from filters.balance import cap_classes, plan_balance, select_diverse, target_counts

COUNTS = {"big": 100, "mid": 40, "small": 10}


def test_targets_sum_to_the_total_and_follow_the_strategy():
    for strategy in ("uniform", "power"):
        t = target_counts(COUNTS, strategy=strategy, power=0.5)
        assert sum(t.values()) == 150
    assert target_counts(COUNTS, strategy="uniform") == {"big": 50, "mid": 50, "small": 50}
    t = target_counts(COUNTS, strategy="power", power=0.5)
    assert t["big"] > t["mid"] > t["small"] and t["big"] / t["small"] < 100 / 10
    assert target_counts(COUNTS, strategy="power", power=1.0) == COUNTS
    assert target_counts(COUNTS, strategy="floor_cap", floor=20, cap=60) == {"big": 60, "mid": 40, "small": 20}
    assert target_counts(COUNTS, strategy="weights", weights={"big": 1, "mid": 1, "small": 2}, total=100) == {"big": 25, "mid": 25, "small": 50}


def test_plan_caps_majorities_and_budgets_minorities():
    plan = plan_balance(COUNTS, strategy="uniform", max_synthetic_ratio=2.0)
    rows = {r["label"]: r for r in plan.iter_rows(named=True)}
    assert rows["big"]["keep_real"] == 50 and rows["big"]["synth"] == 0
    assert rows["small"]["keep_real"] == 10 and rows["small"]["synth"] == 20  # bounded by 2 x 10 real rows
    assert rows["mid"]["synth"] == 10
    assert plan["share_planned"].sum() == pytest.approx(100, abs=0.05)


def test_select_diverse_thins_paraphrase_families_first():
    family = [f"how do I top up my card with cash number {i}" for i in range(8)]
    distinct = ["where is my new card", "what is the exchange rate today", "my transfer failed again", "I forgot my passcode"]
    df = pl.DataFrame({"row_id": [f"r{i}" for i in range(12)], "input": family + distinct})
    keep = select_diverse(df, 5, seed=0)
    chosen = df.filter(keep)["input"].to_list()
    assert len(chosen) == 5
    assert set(distinct) <= set(chosen)  # four distinct phrasings + one of the family
    assert select_diverse(df, 5, seed=0).to_list() == keep.to_list()  # deterministic


def test_cap_classes_marks_the_rows_it_drops():
    train = pl.DataFrame({"row_id": [f"r{i}" for i in range(6)], "input": [f"message number {i} about cards" for i in range(6)], "label": ["a"] * 4 + ["b"] * 2})
    plan = plan_balance({"a": 4, "b": 2}, strategy="uniform")
    out = cap_classes(train, plan)
    assert out.filter(pl.col("label") == "a")["drop_reason"].to_list().count("class_cap") == 1
    assert out.filter(pl.col("label") == "b")["drop_reason"].null_count() == 2
    assert out["row_id"].to_list() == train["row_id"].to_list()


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "mix.png"
    plot_class_mix(COUNTS, {"big": 50, "mid": 50, "small": 50}, {"big": 50, "mid": 45, "small": 30}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
