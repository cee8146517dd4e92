"""Class balance: plan per-class targets, cap majority classes diversely, budget synthesis.

    kept, dropped, counts, plan = balance(rows, config)     # the stage: plan the train split's mix, cap
    plan = plan_balance(counts, strategy="power", power=0.5)
    kept = select_diverse(class_rows, k, seed=0)

Strategies (the target share of class c, before rounding to a total N):
- uniform:   every class 1/C.
- power:     share ∝ count^power; power 1 keeps the observed mix, 0 is uniform, 0.5
             (the default) halves the log-ratio between classes (5.3x -> 2.3x on banking77).
- weights:   share ∝ the given weight (classes without a weight get 0 target rows added).
- floor_cap: no shares: each class is clipped into [floor, cap].
N defaults to the current number of train rows, so balancing moves mass between
classes rather than growing the set; set `total` to grow it.

Per class: keep_real = min(real, target); synth = min(target - real, max_synthetic_ratio
* real) when positive. The ratio bound keeps a 12-row class from becoming 90 % model
text: synthetic rows imitate the few-shot rows they were made from, so beyond about
one synthetic row per real row they add little diversity.

Majority classes are capped by `select_diverse`, not by taking the first N: rows are
grouped into loose near-duplicate clusters (MinHash, Jaccard >= 0.5 on word 2-grams)
and taken round-robin across clusters in a seeded order, so paraphrase families are
thinned before distinct phrasings are lost.
"""

from __future__ import annotations

import hashlib
import math

import polars as pl

from core.config import Config
from core.schema import StageCounts, count_stage, split_dropped
from filters.near_dup import NearDupSettings, dedupe_near

# Loose clusters for choosing which rows of a capped class stay: paraphrase families, not duplicates.
DIVERSITY = NearDupSettings(threshold=0.5, ngram=2, num_perm=64)


def target_counts(
    counts: dict[str, int],
    *,
    strategy: str,
    total: int | None = None,
    power: float = 0.5,
    weights: dict[str, float] | None = None,
    floor: int | None = None,
    cap: int | None = None,
) -> dict[str, int]:
    """Target rows per class (largest-remainder rounding, so they sum to the total exactly)."""
    labels = sorted(counts)
    if strategy == "none":
        return dict(counts)
    if strategy == "floor_cap":
        lo = floor if floor is not None else 0
        hi = cap if cap is not None else max(counts.values(), default=0)
        return {c: min(max(counts[c], lo), hi) for c in labels}
    n_total = total if total is not None else sum(counts.values())
    if strategy == "uniform":
        raw = {c: 1.0 for c in labels}
    elif strategy == "power":
        raw = {c: float(counts[c]) ** power if counts[c] > 0 else 0.0 for c in labels}
    elif strategy == "weights":
        raw = {c: float((weights or {}).get(c, 0.0)) for c in labels}
    else:
        raise ValueError(f"unknown balance strategy {strategy!r}")
    norm = sum(raw.values())
    if norm <= 0:
        return {c: 0 for c in labels}
    exact = {c: n_total * raw[c] / norm for c in labels}
    out = {c: math.floor(v) for c, v in exact.items()}
    short = n_total - sum(out.values())
    for c in sorted(labels, key=lambda c: (-(exact[c] - out[c]), c))[:short]:
        out[c] += 1
    if floor is not None:
        out = {c: max(v, floor) for c, v in out.items()}
    if cap is not None:
        out = {c: min(v, cap) for c, v in out.items()}
    return out


def plan_balance(
    counts: dict[str, int],
    *,
    strategy: str = "power",
    total: int | None = None,
    power: float = 0.5,
    weights: dict[str, float] | None = None,
    floor: int | None = None,
    cap: int | None = None,
    max_synthetic_ratio: float = 1.0,
) -> pl.DataFrame:
    """The balance plan, one row per class.

    Output columns: label, real, target, keep_real, synth, planned (= keep_real + synth),
    share_before, share_planned (percent).
    """
    targets = target_counts(counts, strategy=strategy, total=total, power=power, weights=weights, floor=floor, cap=cap)
    rows = []
    for label in sorted(counts):
        real, target = counts[label], targets[label]
        keep = min(real, target)
        synth = max(0, target - real)
        synth = min(synth, math.floor(max_synthetic_ratio * real))
        rows.append({"label": label, "real": real, "target": target, "keep_real": keep, "synth": synth})
    plan = pl.DataFrame(rows, schema={"label": pl.String, "real": pl.Int64, "target": pl.Int64, "keep_real": pl.Int64, "synth": pl.Int64})
    plan = plan.with_columns(planned=pl.col("keep_real") + pl.col("synth"))
    return plan.with_columns(
        share_before=(100 * pl.col("real") / pl.col("real").sum()).round(2),
        share_planned=(100 * pl.col("planned") / pl.col("planned").sum()).round(2),
    )


def _order_key(row_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\x1f{row_id}".encode()).hexdigest()


def select_diverse(df: pl.DataFrame, k: int, *, seed: int = 0, settings: NearDupSettings = DIVERSITY) -> pl.Series:
    """Boolean mask choosing k rows of one class, round-robin across loose near-dup clusters.

    Input columns: row_id, input. The choice is deterministic for a seed.
    """
    if k >= df.height:
        return pl.Series("keep", [True] * df.height)
    if k <= 0:
        return pl.Series("keep", [False] * df.height)
    clustered = dedupe_near(df.select("row_id", "input"), settings)
    ranked = (
        clustered.with_row_index("_pos")
        .with_columns(_key=pl.col("row_id").map_elements(lambda r: _order_key(r, seed), return_dtype=pl.String))
        .with_columns(_cluster_key=pl.col("_key").min().over("cluster"))
        .with_columns(_round=pl.col("_key").rank("ordinal").over("cluster"))
        .sort(["_round", "_cluster_key"])
    )
    chosen = set(ranked["_pos"].head(k).to_list())
    return pl.Series("keep", [i in chosen for i in range(df.height)])


def cap_classes(train: pl.DataFrame, plan: pl.DataFrame, *, seed: int = 0) -> pl.DataFrame:
    """Add `drop_reason` = 'class_cap' to the rows of capped classes that the plan does not keep.

    Input columns: row_id, input, label. Output: the same frame with drop_reason/drop_detail.
    """
    keep_real = dict(zip(plan["label"], plan["keep_real"]))
    parts = []
    for (label,), group in train.with_row_index("_pos").group_by(["label"], maintain_order=True):
        mask = select_diverse(group, keep_real.get(label, group.height), seed=seed)
        parts.append(group.select("_pos").with_columns(_keep=mask))
    keep = pl.concat(parts) if parts else pl.DataFrame(schema={"_pos": pl.UInt32, "_keep": pl.Boolean})
    out = train.with_row_index("_pos").join(keep, on="_pos", how="left").sort("_pos")
    capped = ~pl.col("_keep")
    return out.with_columns(
        drop_reason=pl.when(capped).then(pl.lit("class_cap")).otherwise(pl.lit(None, dtype=pl.String)),
        drop_detail=pl.when(capped)
        .then(pl.format("class {} capped at {} rows", pl.col("label"), pl.col("label").replace_strict(keep_real, default=None).cast(pl.String)))
        .otherwise(pl.lit(None, dtype=pl.String)),
    ).drop("_pos", "_keep")


def balance(rows: pl.DataFrame, config: Config) -> tuple[pl.DataFrame, pl.DataFrame, StageCounts, pl.DataFrame]:
    """The balance stage: plan the class mix of the train split and cap majority classes.

    Input: rows in the row schema (train and eval). Returns (kept, dropped, counts, plan);
    dropped rows carry reason `class_cap`; the plan's `synth` column is the synthesis budget
    per class. Eval rows pass unchanged.
    """
    b = config.balance
    train = rows.filter(pl.col("split") == "train")
    counts = dict(train.group_by("label").len().iter_rows())
    labels = config.label_set()
    if labels is not None:  # classes with no rows left still get a target (and a synthesis budget)
        counts = {label: counts.get(label, 0) for label in labels}
    plan = plan_balance(
        counts,
        strategy=b.strategy if b.enabled else "none",
        total=b.total, power=b.power, weights=b.weights, floor=b.floor, cap=b.cap,
        max_synthetic_ratio=b.max_synthetic_ratio,
    )
    marked = cap_classes(train, plan, seed=config.seed)
    kept_train, dropped = split_dropped(marked, stage="balance")
    kept = pl.concat([kept_train, rows.filter(pl.col("split") != "train")])
    return kept, dropped, count_stage("balance", rows, kept, dropped), plan
