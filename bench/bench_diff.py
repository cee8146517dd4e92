"""Benchmark: diff two 1M-row snapshots (JSON + markdown + HTML) and report time and peak RSS.

    .venv/bin/python bench/bench_diff.py                 # 1M train rows per snapshot
    .venv/bin/python bench/bench_diff.py --rows 100000   # quicker

Synthesizes two snapshots of one dataset with core.snapshot.write_snapshot into
bench/out/diff-<rows>/ (git-ignored; reused when present): A has `rows` train rows
(77 classes, Zipf-skewed, 6-18 words each drawn with the
bundled banking77 sample's word frequencies) and 2% of that as eval; B removes
2% of A's train rows (exact and near duplicates folded into kept rows, too_short,
label conflicts), adds 2% (half of them synthetic, with a provenance column),
changes the text of 1% and the label of 0.2%. The diff runs in a fresh process per
repeat so its peak RSS is its own (ru_maxrss), and the script prints a markdown
table (figures for docs/diff.md).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.schema import DROP_SCHEMA, ROW_SCHEMA, StageCounts  # noqa: E402
from core.snapshot import write_snapshot  # noqa: E402

N_CLASSES = 77
SYLLABLES = ["ka", "ro", "mi", "te", "su", "na", "li", "po", "ve", "da", "gu", "shi", "an", "el", "or", "up"]


def vocabulary(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Words and their frequencies from the bundled banking77 sample (pseudo-words if it is absent)."""
    sample = ROOT / "data" / "banking77" / "raw" / "messages.jsonl"
    counts: dict[str, int] = {}
    if sample.exists():
        for line in sample.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                text = json.loads(line).get("text")
            except (ValueError, AttributeError):
                continue
            for w in str(text).split():
                counts[w] = counts.get(w, 0) + 1
    if len(counts) < 500:
        counts = {"".join(rng.choice(SYLLABLES, size=rng.integers(1, 4))): 1 for _ in range(4000)}
    words = sorted(counts)
    freq = np.array([counts[w] for w in words], dtype=float)
    return words, freq / freq.sum()


def texts(rng: np.random.Generator, vocab: tuple[list[str], np.ndarray], n: int) -> pl.Series:
    """n sentences of 6-18 words drawn with the sample's word frequencies."""
    words, p = vocab
    idx = rng.choice(len(words), size=(n, 18), p=p)
    lengths = rng.integers(6, 19, size=n)
    flat = pl.Series(words).gather(idx.ravel())
    frame = pl.DataFrame({"w": flat.reshape((n, 18)).arr.to_list(), "n": lengths})
    return frame.select(pl.col("w").list.head(pl.col("n")).list.join(" ").alias("input"))["input"]


def hex_ids(prefix: str, n: int) -> pl.Series:
    """16-hex-digit ids like ingest's (sha256 prefix), from a polars hash: deterministic and fast."""
    h = pl.Series(np.arange(n)).hash(seed=abs(hash(prefix)) % (2**31))
    return pl.Series("row_id", [f"{x:016x}" for x in h.to_numpy()])


def frame(ids: pl.Series, inputs: pl.Series, labels: np.ndarray, split: str, synthetic: bool = False) -> pl.DataFrame:
    n = len(ids)
    classes = [f"intent_{i:02d}" for i in range(N_CLASSES)]
    label = pl.Series(classes).gather(labels)
    return pl.DataFrame(
        {
            "row_id": ids, "split": split, "source": f"data/raw/{split}.jsonl", "line": np.arange(1, n + 1),
            "input": inputs, "output": label, "label": label,
            "pii": pl.Series([[]] * n, dtype=pl.List(pl.String)) if n else pl.Series([], dtype=pl.List(pl.String)),
            "synthetic": synthetic,
        },
        schema_overrides=ROW_SCHEMA,
    )


def rejected(df: pl.DataFrame, stage: str, reason: str, duplicate_of=None, cluster=None) -> pl.DataFrame:
    n = df.height
    def col(v):
        return v if isinstance(v, pl.Series) else pl.Series([v] * n, dtype=pl.String)
    return df.select(list(ROW_SCHEMA)).with_columns(
        stage=pl.lit(stage), reason=pl.lit(reason), detail=pl.lit(""),
        duplicate_of=col(duplicate_of), cluster=col(cluster),
    ).select(list({**ROW_SCHEMA, **DROP_SCHEMA}))


def synthesize(out: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    words = vocabulary(rng)
    p = 1.0 / np.arange(1, N_CLASSES + 1) ** 0.8
    p /= p.sum()
    n_eval = rows // 50
    train_a = frame(hex_ids("a", rows), texts(rng, words, rows), rng.choice(N_CLASSES, rows, p=p), "train")
    eval_ = frame(hex_ids("e", n_eval), texts(rng, words, n_eval), rng.choice(N_CLASSES, n_eval, p=p), "eval")
    n_rej = rows * 3 // 100
    rej_a = rejected(frame(hex_ids("r", n_rej), texts(rng, words, n_rej), rng.choice(N_CLASSES, n_rej, p=p), "train"), "clean", "too_short")

    perm = rng.permutation(rows)
    k_rm, k_ch, k_lab = rows * 2 // 100, rows // 100, rows // 500
    rm, ch = perm[:k_rm], perm[k_rm : k_rm + k_ch]
    keep_mask = np.ones(rows, bool)
    keep_mask[rm] = False
    removed = train_a[rm]
    kept = train_a.filter(pl.Series(keep_mask))
    # Changed: new text for 1% of the kept rows; the first 0.2% also change label.
    change = pl.Series(np.isin(np.arange(rows), ch)).filter(pl.Series(keep_mask))
    new_label = pl.Series([f"intent_{i:02d}" for i in rng.choice(N_CLASSES, kept.height, p=p)])
    label_mask = change & (pl.Series(np.cumsum(change.to_numpy())) <= k_lab)
    kept = kept.with_columns(
        input=pl.when(change).then(pl.col("input").str.to_lowercase() + pl.lit("!")).otherwise(pl.col("input")),
        label=pl.when(label_mask).then(new_label).otherwise(pl.col("label")),
    ).with_columns(output=pl.col("label"))
    # Removed: a quarter each exact duplicate / near duplicate (folded into a kept row), too_short, label conflict.
    q = k_rm // 4
    target = kept["row_id"].gather(rng.integers(0, kept.height, k_rm))
    rej_b = pl.concat([
        rej_a,
        rejected(removed[:q], "dedupe", "exact_duplicate", target[:q], "x" + target[:q]),
        rejected(removed[q : 2 * q], "near_dup", "near_duplicate", target[q : 2 * q], "n" + target[q : 2 * q]),
        rejected(removed[2 * q : 3 * q], "clean", "too_short"),
        rejected(removed[3 * q :], "dedupe", "label_conflict", None, "x" + removed[3 * q :]["row_id"]),
    ])
    n_add = rows * 2 // 100
    added = frame(hex_ids("n", n_add), texts(rng, words, n_add), rng.choice(N_CLASSES, n_add, p=p), "train")
    added = added.with_columns(synthetic=pl.Series(np.arange(n_add) % 2 == 0))
    train_b = pl.concat([kept, added]).with_columns(
        provenance=pl.when(pl.col("synthetic")).then(pl.lit("synth-v1")).otherwise(None)
    )
    out.mkdir(parents=True, exist_ok=True)

    def write(train, rej, config):
        n = train.height + eval_.height + rej.height
        stages = [
            StageCounts("ingest", n, n).check(),
            StageCounts("curate", n, train.height + eval_.height, filtered=dict(rej.group_by("reason").len().iter_rows())).check(),
        ]
        return write_snapshot(
            out, "bench", train=train, eval=eval_, rejected=rej, quarantine=pl.DataFrame(schema={"split": pl.String, "source": pl.String, "line": pl.Int64, "reason": pl.String, "detail": pl.String, "raw": pl.String}),
            stages=stages, config=config, config_hash=json.dumps(config, sort_keys=True)[:16], inputs=[],
        )

    a = write(train_a, rej_a, {"dedupe": {"near": False}, "seed": 0})
    b = write(train_b, rej_b, {"dedupe": {"near": True}, "seed": 0})
    return a, b


def run_diff(a: str, b: str, out: Path) -> dict:
    """One timed diff in this process: compute, then JSON + markdown + HTML written to `out`."""
    from core.diff import check_gates, compute_diff, parse_gates
    from core.diff_render import render_html, render_markdown
    from core.io import write_json, write_text

    t0 = time.perf_counter()
    d = compute_diff(a, b)
    t1 = time.perf_counter()
    report = d.to_dict(gates=check_gates(d, parse_gates(["share=2", "removed=10", "conflicts"])))
    write_json(report, out / "diff.json")
    t2 = time.perf_counter()
    md = render_markdown(report)
    write_text(md, out / "diff.md")
    t3 = time.perf_counter()
    write_text(render_html(report), out / "diff.html")
    t4 = time.perf_counter()
    return {
        "compute_s": t1 - t0, "json_s": t2 - t1, "md_s": t3 - t2, "html_s": t4 - t3, "total_s": t4 - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "totals": d.totals(), "md_chars": len(md), "html_bytes": (out / "diff.html").stat().st_size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--child", nargs=2, metavar=("A", "B"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_diff(*args.child, args.out)))
        return

    folder = args.out / f"diff-{args.rows}"
    t0 = time.perf_counter()
    ids = sorted(p for p in (folder / "bench").glob("*/manifest.json")) if (folder / "bench").exists() else []
    if len(ids) >= 2:
        index = [json.loads(l)["snapshot_id"] for l in (folder / "bench" / "index.jsonl").read_text().splitlines()]
        a, b = folder / "bench" / index[-2], folder / "bench" / index[-1]
        print(f"reusing {a} and {b}")
    else:
        a, b = synthesize(folder, args.rows)
        print(f"synthesized {a} and {b} in {time.perf_counter() - t0:.1f}s")
    results = []
    for _ in range(args.repeats):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(a), str(b), "--out", str(folder)],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cli = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "curate", "diff", str(a), str(b), "--out-md", str(folder / "cli.md"),
         "--out-html", str(folder / "cli.html"), "--out-json", str(folder / "cli.json")],
        check=True, cwd=ROOT, capture_output=True,
    )
    cli = time.perf_counter() - cli
    best = min(results, key=lambda r: r["total_s"])
    t = best["totals"]
    rows_a = json.loads((a / "manifest.json").read_text())["rows"]
    rows_b = json.loads((b / "manifest.json").read_text())["rows"]
    print()
    print(f"diff of two snapshots: A train {rows_a['train']:,} eval {rows_a['eval']:,} rejected {rows_a['rejected']:,}; "
          f"B train {rows_b['train']:,} eval {rows_b['eval']:,} rejected {rows_b['rejected']:,}")
    print(f"found: {t['added']:,} added, {t['removed']:,} removed, {t['changed']:,} changed "
          f"({t['label_changed']:,} label), {t['new_conflicts']:,} new conflict rows")
    print()
    print("| step | seconds (best of %d) | median |" % len(results))
    print("|---|---:|---:|")
    for key, name in (("compute_s", "compute (read 8 Parquet files, joins)"), ("json_s", "JSON report"), ("md_s", "markdown"),
                      ("html_s", "HTML report"), ("total_s", "total in process")):
        vals = sorted(r[key] for r in results)
        print(f"| {name} | {best[key]:.2f} | {vals[len(vals) // 2]:.2f} |")
    print(f"| `curate diff` CLI end to end (process start, imports, 3 outputs) | {cli:.2f} | |")
    print()
    print(f"peak RSS of the diff process: {max(r['peak_rss_mb'] for r in results):.0f} MB; "
          f"markdown {best['md_chars']:,} chars, HTML {best['html_bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
