"""CSV ingest: the strict RFC 4180 reader (core/ingest.py) beside the parsers it could have been.

    .venv/bin/python bench/bench_csv.py                     # 200k and 1M rows
    .venv/bin/python bench/bench_csv.py --rows 100000

A generated file like a support export: most rows plain, 10 % with a quoted field holding a
comma, 1 % with a quoted newline, 1 % with doubled quotes. Side by side, in one run:
`read_csv` (strict: a stray quote quarantines its record), the stdlib `csv.reader` the
previous reader was built on (lenient: a stray quote merges records), and polars'
`read_csv` (fast; on a stray quote it fails the whole file, naming no record).
Also checks that each gives the same fields on the well-formed file.
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from pathlib import Path

import polars as pl

from core.ingest_csv import read_csv


def make_file(path: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = "card top up transfer pending refund pin blocked exchange rate fee cash atm virtual".split()
    rows, lines = [], ["text,label"]
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        label = f"intent_{i % 77}"
        r = rng.random()
        if r < 0.10:
            text = text.replace(" ", ", ", 1)
        elif r < 0.11:
            text = text.replace(" ", "\n", 1)
        elif r < 0.12:
            text = f'he said "{text}"'
        quoted = any(c in text for c in ',\n"')
        lines.append((f'"{text.replace(chr(34), chr(34) * 2)}"' if quoted else text) + f",{label}")
        rows.append((text, label))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="200000,1000000", help="comma-separated row counts")
    args = ap.parse_args()
    print("| rows | strict read_csv s | csv.reader s | polars.read_csv s | strict rows/s | same fields |")
    print("|---:|---:|---:|---:|---:|---|")
    for n in [int(x) for x in args.rows.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "raw.csv"
            expected = make_file(path, n)
            t_strict, batches = timed(lambda: list(read_csv(path, "text", "label")))
            values = [v for batch in batches for v in batch.values]
            t_stdlib, std = timed(lambda: list(csv.reader(path.open(newline="", encoding="utf-8")))[1:])
            t_polars, frame = timed(lambda: pl.read_csv(path, infer_schema_length=0))
            same = (values == expected and [tuple(r) for r in std] == expected
                    and list(zip(frame["text"], frame["label"])) == expected and not any(b.quarantine for b in batches))
            print(f"| {n:,} | {t_strict:.2f} | {t_stdlib:.2f} | {t_polars:.2f} | {n / t_strict:,.0f} | {same} |")


if __name__ == "__main__":
    main()
