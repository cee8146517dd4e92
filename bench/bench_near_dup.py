"""Benchmark near-duplicate detection: filters.near_dup against datasketch and rensa.

    .venv/bin/python bench/bench_near_dup.py --sizes 10000,100000,1000000

For every size, the corpus comes from bench/near_dup_corpus.py (cached under bench/out/).
Each method runs end to end (read the Parquet file, shingle, sign, band, and for ours
verify + cluster) in a fresh subprocess, so its peak RSS is its own; imports and numba's
JIT load happen before the clock starts. All methods get the same shingles (word 3-grams
from filters.near_dup.shingles), 128 permutations, threshold 0.8.

Ground truth is exact: the Jaccard over shingle strings of every planted pair (and every
pair of copies of one source), plus every pair any method reported. A true pair has
Jaccard >= 0.8. Recall for ours: both rows end in one cluster; for the baselines (which
return unverified LSH candidates, no clusters): the pair was reported. Precision: reported
pairs (ours: verified edges; baselines: candidates) whose true Jaccard >= 0.8.

Writes a markdown table to stdout and bench/out/near_dup.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out"
THRESHOLD, NUM_PERM = 0.8, 128
METHODS = ["near_dup", "rensa", "datasketch_batch", "datasketch_loop"]


# ---------------------------------------------------------------------------------------
# Workers (one method, one corpus, fresh process)
# ---------------------------------------------------------------------------------------
def _shingle_lists(texts: list[str]):
    from filters.near_dup import shingles

    return [shingles(t) for t in texts]


def run_near_dup(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    from filters.near_dup import NearDupSettings, find_links

    texts = pl.read_parquet(path, columns=["text"])["text"]
    links = find_links(texts, NearDupSettings(threshold=THRESHOLD, num_perm=NUM_PERM))
    return links.left, links.right, links.cluster


def run_rensa(path: Path):
    from rensa import RMinHash, RMinHashLSH

    texts = pl.read_parquet(path, columns=["text"])["text"].to_list()
    token_sets = [[s.decode() for s in sh] for sh in _shingle_lists(texts)]
    mhs = RMinHash.from_token_sets(token_sets, num_perm=NUM_PERM, seed=1)
    lsh = RMinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, num_bands=16)  # 16 x 8, as rensa's README
    lsh.insert_many(mhs)
    left, right = [], []
    for i, cands in enumerate(lsh.query_all(mhs)):
        for j in cands:
            if j < i:
                left.append(j)
                right.append(i)
    return np.asarray(left, np.int64), np.asarray(right, np.int64), None


def run_datasketch_batch(path: Path):
    from datasketch import MinHash, MinHashLSH

    texts = pl.read_parquet(path, columns=["text"])["text"].to_list()
    mhs = MinHash.bulk(_shingle_lists(texts), num_perm=NUM_PERM)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    with lsh.insertion_session() as session:
        for i, m in enumerate(mhs):
            session.insert(i, m, check_duplication=False)
    left, right = [], []
    for i, m in enumerate(mhs):
        for j in lsh.query(m):
            if j < i:
                left.append(j)
                right.append(i)
    return np.asarray(left, np.int64), np.asarray(right, np.int64), None


def run_datasketch_loop(path: Path):
    from datasketch import MinHash, MinHashLSH

    from filters.near_dup import shingles

    texts = pl.read_parquet(path, columns=["text"])["text"].to_list()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    left, right = [], []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM)
        m.update_batch(shingles(text))
        for j in lsh.query(m):
            left.append(j)
            right.append(i)
        lsh.insert(i, m)
    return np.asarray(left, np.int64), np.asarray(right, np.int64), None


def worker(method: str, corpus: Path, result: Path) -> None:
    fn = globals()[f"run_{method}"]
    fn(OUT / "warmup.parquet")  # imports, numba cache load: not timed
    start = time.perf_counter()
    left, right, cluster = fn(corpus)
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    arrays = {"left": left, "right": right}
    if cluster is not None:
        arrays["cluster"] = cluster
    np.savez(result, **arrays)
    print(json.dumps({"seconds": seconds, "rss_mb": rss_mb}))


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------
def exact_jaccard(texts: list[str], left: np.ndarray, right: np.ndarray) -> np.ndarray:
    from filters.near_dup import shingles

    cache: dict[int, set[bytes]] = {}

    def sset(i: int) -> set[bytes]:
        s = cache.get(i)
        if s is None:
            s = cache[i] = set(shingles(texts[i]))
        return s

    out = np.empty(len(left), np.float64)
    for k, (a, b) in enumerate(zip(left.tolist(), right.tolist())):
        x, y = sset(a), sset(b)
        union = len(x | y)
        out[k] = len(x & y) / union if union else 0.0
    return out


def evaluate(texts: list[str], planted: pl.DataFrame, results: dict[str, dict]) -> None:
    """Add recall, recall_80_85 and precision to every result, against exact Jaccard."""
    reported = [planted.select("a", "b")]
    for res in results.values():
        reported.append(pl.DataFrame({"a": res["left"], "b": res["right"]}))
    pairs = pl.concat(reported).unique()
    known = planted.select("a", "b", "jaccard")
    pairs = pairs.join(known, on=["a", "b"], how="left")
    todo = pairs.filter(pl.col("jaccard").is_null())
    jac = exact_jaccard(texts, todo["a"].to_numpy(), todo["b"].to_numpy())
    truth = pl.concat([pairs.filter(pl.col("jaccard").is_not_null()), todo.with_columns(jaccard=pl.Series(jac))])
    true_pairs = truth.filter(pl.col("jaccard") >= THRESHOLD)
    ta, tb = true_pairs["a"].to_numpy(), true_pairs["b"].to_numpy()
    band = (true_pairs["jaccard"] < 0.85).to_numpy()
    for res in results.values():
        if "cluster" in res:
            found = res["cluster"][ta] == res["cluster"][tb]
        else:
            rep = pl.DataFrame({"a": res["left"], "b": res["right"], "hit": True}).unique(["a", "b"])
            found = true_pairs.join(rep, on=["a", "b"], how="left")["hit"].fill_null(False).to_numpy()
        rep_j = pl.DataFrame({"a": res["left"], "b": res["right"]}).unique().join(truth, on=["a", "b"], how="left")
        res["true_pairs"] = len(ta)
        res["true_80_85"] = int(band.sum())
        res["recall"] = float(found.mean()) if len(ta) else float("nan")
        res["recall_80_85"] = float(found[band].mean()) if band.any() else float("nan")
        res["reported"] = rep_j.height
        res["precision"] = float((rep_j["jaccard"] >= THRESHOLD).mean()) if rep_j.height else float("nan")


# ---------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------
def run_method(method: str, corpus: Path, timeout: int) -> dict | None:
    result = OUT / f"result_{method}_{corpus.stem}.npz"
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", method, "--corpus", str(corpus), "--result", str(result)],
        capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return None
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    arrays = np.load(result)
    stats.update({k: arrays[k] for k in arrays.files})
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--loop-max", type=int, default=100_000, help="largest size for datasketch's per-doc loop")
    ap.add_argument("--batch-max", type=int, default=100_000, help="largest size for datasketch's batch API")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--worker")
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--result", type=Path)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.corpus, args.result)
        return

    from bench.near_dup_corpus import ensure_corpus

    OUT.mkdir(parents=True, exist_ok=True)
    ensure_corpus(200, OUT / "warmup.parquet", seed=99)
    from filters.near_dup import choose_bands

    bands, rows = choose_bands(THRESHOLD, NUM_PERM)
    lines = [
        f"Near-dup benchmark: threshold {THRESHOLD}, {NUM_PERM} perms, word 3-grams, "
        f"near_dup bands {bands}x{rows}; {_machine()}",
        "",
        "| docs | method | seconds | docs/s | peak RSS MB | true pairs (0.80-0.85) | recall | recall 0.80-0.85 | reported pairs | precision |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    limits = {"datasketch_loop": args.loop_max, "datasketch_batch": args.batch_max}
    measured_rate: dict[str, float] = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        corpus, pair_path = ensure_corpus(size, OUT / f"corpus_{size}.parquet")
        results: dict[str, dict] = {}
        for method in METHODS:
            if size > limits.get(method, size):
                continue
            res = run_method(method, corpus, args.timeout)
            if res is not None:
                results[method] = res
                measured_rate[method] = size / res["seconds"]
                print(f"  {size} {method}: {res['seconds']:.2f}s", file=sys.stderr)
        texts = pl.read_parquet(corpus, columns=["text"])["text"].to_list()
        evaluate(texts, pl.read_parquet(pair_path), results)
        for method in METHODS:
            res = results.get(method)
            if res is None:
                if method in measured_rate:
                    est = size / measured_rate[method]
                    lines.append(
                        f"| {size:,} | {method} | ~{est:,.0f} (extrapolated from the largest measured size) | "
                        f"~{measured_rate[method]:,.0f} | | | | | | |"
                    )
                continue
            lines.append(
                f"| {size:,} | {method} | {res['seconds']:.2f} | {size / res['seconds']:,.0f} | {res['rss_mb']:,.0f} | "
                f"{res['true_pairs']:,} ({res['true_80_85']:,}) | {res['recall']:.4f} | {res['recall_80_85']:.4f} | "
                f"{res['reported']:,} | {res['precision']:.4f} |"
            )
        print("\n".join(lines[-len(METHODS):]), file=sys.stderr)
    table = "\n".join(lines) + "\n"
    print(table)
    (OUT / "near_dup.md").write_text(table)


def _machine() -> str:
    import os
    import platform

    return f"{os.cpu_count()} CPUs, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
