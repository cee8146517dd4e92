"""Build a steeply imbalanced banking77 train split from the official one (data/banking77/full/train.csv).

    .venv/bin/python data/build_imbalanced.py            # -> data/banking77/imbalanced/train.csv

Where class imbalance hurts a fine-tuned model: the 77 intents get a geometric profile of rows, from
RAREST (5) to LARGEST (120): a quarter of the intents keep 5-10 rows, the largest 100 or more. Intents
are ranked by their rows in the official split (ties in a seeded order), so the larger counts go to
intents it has enough rows of (it has 35-187 per intent). The rows of an intent are the first of its
rows in a seeded shuffle of the official split (real messages, unaltered). The
evaluation is the official test split of all 77 intents (data/banking77/full/test.csv), untouched.
Rebuilds byte for byte; configs/banking77_imbalanced.yaml trains on it.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 77
RAREST, LARGEST = 5, 120


def profile(n_classes: int, rarest: int = RAREST, largest: int = LARGEST) -> list[int]:
    """Rows per class, geometric from `rarest` to `largest`."""
    ratio = (largest / rarest) ** (1 / (n_classes - 1))
    return [round(rarest * ratio**i) for i in range(n_classes)]


def build(source: Path, out: Path, seed: int = SEED) -> dict[str, int]:
    with open(source, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_intent: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_intent[r["category"]].append(r)
    rng = random.Random(seed)
    intents = sorted(by_intent)
    rng.shuffle(intents)
    intents.sort(key=lambda i: len(by_intent[i]))  # the larger counts to intents the source has enough rows of
    counts = dict(zip(intents, profile(len(intents))))
    picked = []
    for intent in sorted(intents):
        pool = list(by_intent[intent])
        rng.shuffle(pool)
        if len(pool) < counts[intent]:
            raise ValueError(f"{intent}: {len(pool)} rows, {counts[intent]} wanted")
        picked += pool[: counts[intent]]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "category"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({"text": r["text"], "category": r["category"]} for r in picked)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE / "banking77" / "full" / "train.csv")
    parser.add_argument("--out", type=Path, default=HERE / "banking77" / "imbalanced" / "train.csv")
    args = parser.parse_args()
    counts = build(args.source, args.out)
    ranked = sorted(counts.values())
    print(f"{sum(ranked)} rows over {len(ranked)} intents: {ranked[0]}-{ranked[len(ranked) // 4 - 1]} in the rarest "
          f"quarter, {ranked[-1]} at most -> {args.out}")


if __name__ == "__main__":
    main()
