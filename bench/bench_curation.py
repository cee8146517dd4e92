"""Throughput of the curation core (ingest -> clean -> exact dedupe) on large inputs.

    .venv/bin/python bench/bench_curation.py --rows 100000,1000000

Builds a JSONL corpus of N rows from the bundled banking77 sample (real messages,
each made unique by a suffix, with 1 % exact duplicates and 0.1 % broken lines),
runs the three stages as the pipeline does, and prints a markdown table: seconds per
stage, rows per second end to end, and peak RSS. Outputs go to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def make_corpus(n: int, path: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    base = []
    for line in Path("data/banking77/raw/messages.jsonl").read_bytes().splitlines():
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(row, dict) and isinstance(row.get("text"), str) and isinstance(row.get("category"), str) and len(row["text"]) > 12:
            base.append(row)
    with open(path, "w", encoding="utf-8") as fh:
        written = []
        for i in range(n):
            r = rng.random()
            if r < 0.001:
                fh.write('{"text": "broken\n')
                continue
            if r < 0.011 and written:
                fh.write(rng.choice(written))
                continue
            row = rng.choice(base)
            line = json.dumps({"text": f"{row['text']} (ref {i})", "category": row["category"]}) + "\n"
            if len(written) < 10_000:
                written.append(line)
            fh.write(line)


def run(n: int) -> dict:
    from core.config import Config
    from core.ingest import ingest
    from filters.clean import clean
    from filters.dedupe import dedupe

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"curation-{n}.jsonl"
    if not path.exists():
        make_corpus(n, path)
    config = Config.model_validate(
        {
            "name": "bench",
            "task": {"kind": "classification", "input_field": "text", "output_field": "category", "labels_file": "data/banking77/categories.json"},
            "data": {"train": [{"path": str(path)}]},
            "clean": {"blocklist": {"files": ["configs/blocklist.txt"]}},
            "allow_outside_paths": True,  # the corpus is generated under bench/out
        }
    )
    t0 = time.perf_counter()
    rows, quarantine, _ = ingest(config)
    t1 = time.perf_counter()
    kept, _, _ = clean(rows, config)
    t2 = time.perf_counter()
    final, _, _ = dedupe(kept, config)
    t3 = time.perf_counter()
    return {
        "rows": n,
        "ingest_s": t1 - t0,
        "clean_s": t2 - t1,
        "dedupe_s": t3 - t2,
        "total_s": t3 - t0,
        "rows_per_s": n / (t3 - t0),
        "kept": final.height,
        "quarantined": quarantine.height,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="100000,1000000")
    args = parser.parse_args()
    print("| rows | ingest s | clean s | exact dedupe s | total s | rows/s | kept | quarantined | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.rows.split(",")):
        r = run(n)
        print(
            f"| {r['rows']:,} | {r['ingest_s']:.1f} | {r['clean_s']:.1f} | {r['dedupe_s']:.1f} | {r['total_s']:.1f} "
            f"| {r['rows_per_s']:,.0f} | {r['kept']:,} | {r['quarantined']:,} | {r['peak_rss_mb']:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
