"""Peak memory of ingest on a big generated JSONL file, against the file's size.

    .venv/bin/python bench/bench_ingest_memory.py              # ~50 MB, 330k records
    .venv/bin/python bench/bench_ingest_memory.py --mb 170 --batches 0,50000,10000

Each batch size (ingest.batch_records) is measured on the same file; 0 stands for the
whole file in one batch, as ingest read before it parsed in batches (the baseline).

Each measurement runs `core.ingest.ingest` in a fresh child process and reads its peak
resident set (getrusage's ru_maxrss), less what the child held after its imports, so the
figure is what reading the file costs. Also printed: the time, and a digest of the rows and
the quarantine, so that two versions of the reader can be checked to give the same rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import hashlib, json, resource, sys, time
from pathlib import Path
import polars as pl
from core.config import Config
from core.ingest import ingest
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
path, batch = Path(sys.argv[1]), int(sys.argv[2])
cfg = Config.model_validate({
    "name": "bench", "allow_outside_paths": True,
    "task": {"kind": "classification", "input_field": "text", "output_field": "label"},
    "data": {"train": [{"path": str(path)}]},
    "ingest": {"batch_records": batch or 2**62},
    "output": {"snapshots": str(path.parent / "s"), "runs": str(path.parent / "r")},
})
t = time.perf_counter()
rows, quarantine, counts = ingest(cfg)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
digest = hashlib.sha256()
for frame in (rows, quarantine):
    digest.update(frame.drop("source").write_ndjson().encode())  # the source names the temporary folder
print(json.dumps({"base_kb": base, "peak_kb": peak, "seconds": seconds, "rows": rows.height,
                  "quarantined": quarantine.height, "digest": digest.hexdigest()[:16]}))
"""


def make_file(path: Path, mb: float, seed: int = 0) -> int:
    """JSONL like a support export: short messages, 77 intents, 1 in 1000 lines broken."""
    rng = random.Random(seed)
    words = "card top up transfer pending refund pin blocked exchange rate fee cash atm virtual über 返金".split()
    target, n = int(mb * 1_000_000), 0
    with path.open("w", encoding="utf-8") as fh:
        while fh.tell() < target:
            text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 24)))
            record = {"id": n, "text": text, "label": f"intent_{n % 77}", "source": "export"}
            line = json.dumps(record, ensure_ascii=False)
            fh.write((line[: len(line) // 2] if n % 1000 == 999 else line) + "\n")
            n += 1
    return n


def measure(path: Path, batch: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(batch)], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=50.0, help="size of the generated JSONL file in MB (default 50)")
    parser.add_argument("--batches", default="0,50000", help="batch sizes to compare, comma-separated; 0 = the whole file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jsonl"
        n = make_file(path, args.mb)
        size = path.stat().st_size
        print(f"file: {size / 2**20:.1f} MiB, {n:,} lines ({hashlib.sha256(path.read_bytes()).hexdigest()[:12]})")
        print("| batch_records | seconds | rows kept | quarantined | digest | peak RSS (MiB) | reading cost (MiB) | x the file |")
        print("|---|---:|---:|---:|---|---:|---:|---:|")
        for batch in (int(b) for b in args.batches.split(",")):
            got = measure(path, batch)
            cost = (got["peak_kb"] - got["base_kb"]) * 1024  # bytes
            print(f"| {batch or 'whole file'} | {got['seconds']:.1f} | {got['rows']:,} | {got['quarantined']:,} | {got['digest']} "
                  f"| {got['peak_kb'] / 1024:.0f} | {cost / 2**20:.0f} | {cost / size:.1f} |")

if __name__ == "__main__":
    main()
