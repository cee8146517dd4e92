import polars as pl

from filters.exact_dedup import dedupe_exact


def rows(data):
    return pl.DataFrame(
        [{"row_id": f"r{i}", "split": s, "input": t, "output": o} for i, (s, t, o) in enumerate(data)]
    )


def test_duplicates_conflicts_and_contamination():
    df = rows([
        ("train", "where is my card", "card_arrival"),      # r0 kept
        ("train", "where is my card", "card_arrival"),      # r1 duplicate of r0
        ("train", "top up failed", "top_up_failed"),        # r2 conflict
        ("train", "top up failed", "top_up_reverted"),      # r3 conflict
        ("train", "what is the rate", "exchange_rate"),     # r4 leaks eval r6
        ("train", "Where is my card", "card_arrival"),      # r5 case differs: not exact
        ("eval", "what is the rate", "exchange_rate"),      # r6 eval never changes
    ])
    out = dedupe_exact(df, casefold=False, decontaminate=True)
    assert out["drop_reason"].to_list() == [None, "exact_duplicate", "label_conflict", "label_conflict", "eval_contamination", None, None]
    assert out["duplicate_of"].to_list() == [None, "r0", None, None, "r6", None, None]
    assert out["cluster"][2] == out["cluster"][3] is not None
    assert out["cluster"][0] == out["cluster"][1]


def test_casefold_option_and_no_decontamination():
    df = rows([("train", "Where is my card", "a"), ("train", "where is my card", "a"), ("eval", "where is my card", "a")])
    out = dedupe_exact(df, casefold=True, decontaminate=False)
    assert out["drop_reason"].to_list() == [None, "exact_duplicate", None]


def test_already_dropped_rows_are_left_alone():
    df = rows([("train", "same", "a"), ("train", "same", "b")]).with_columns(
        drop_reason=pl.Series([None, "too_short"], dtype=pl.String), drop_detail=pl.lit(None, dtype=pl.String)
    )
    out = dedupe_exact(df)
    assert out["drop_reason"].to_list() == [None, "too_short"]  # no conflict with a dropped row
