"""Benchmark corpus for near-duplicate detection: real short texts with planted near-duplicates.

Base documents are 20-60 words cut from concatenated real sentences (banking77 train/test
texts, clinc150 utterances, viggo references from ../shared/datasets). A share of rows are
mutated copies of a base document: words are replaced, inserted or deleted one edit at a
time until the exact word-3-gram Jaccard (same normalisation as filters.near_dup.shingles)
to the source falls to a target drawn uniformly from [0.5, 1.0]; a target of 1.0 means an
untouched exact copy. The achieved Jaccard is recorded exactly, and so is the Jaccard of
every pair of copies of the same source, so the ground truth is exact.

    .venv/bin/python bench/near_dup_corpus.py --rows 100000 --out bench/out/corpus_100000.parquet

Writes <out> (columns row, text) and <out stem>.pairs.parquet (a, b, jaccard; a < b).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from filters.near_dup import shingles  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
DUP_SHARE = 0.2  # rows that are planted copies: enough pairs in every similarity band at 10k rows
EXACT_SHARE = 0.1  # of the copies, untouched (exact duplicates, Jaccard 1)
MIN_WORDS, MAX_WORDS = 20, 60  # the document length


def load_sentences() -> list[str]:
    """Every real sentence the shared datasets hold (about 45k), or, where they are not
    beside the checkout, the project's bundled samples (about 5k)."""
    if not DATASETS.is_dir():
        return load_bundled_sentences()
    out: list[str] = []
    for split in ("train.csv", "test.csv"):
        out += pl.read_csv(DATASETS / "banking77" / split)["text"].to_list()
    clinc = json.loads((DATASETS / "clinc150" / "data_full.json").read_text())
    for rows in clinc.values():
        out += [r[0] for r in rows]
    for split in ("train.csv", "valid.csv", "test.csv"):
        out += pl.read_csv(DATASETS / "viggo" / split)["ref"].to_list()
    return [s.strip() for s in out if s and s.strip()]


def load_bundled_sentences() -> list[str]:
    """Real sentences from data/ (banking77 and ViGGO samples); broken records skipped."""
    data = ROOT / "data"
    out: list[str] = []
    for path in (data / "banking77" / "raw" / "messages.jsonl", data / "banking77" / "eval.jsonl"):
        for line in path.read_bytes().splitlines():
            try:
                row = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(row, dict) and isinstance(row.get("text"), str):
                out.append(row["text"])
    for path in (data / "viggo" / "raw" / "viggo_train.csv", data / "viggo" / "eval.csv"):
        out += pl.read_csv(path, infer_schema_length=0)["text"].drop_nulls().to_list()
    return sorted({s.strip() for s in out if s and s.strip() and len(s) < 1000})


def _jaccard(a: set[bytes], b: set[bytes]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _shingle_set(words: list[str]) -> set[bytes]:
    return set(shingles(" ".join(words), ngram=3, shingle="word"))


def mutate(words: list[str], target: float, vocab: list[str], rng: random.Random) -> tuple[list[str], float]:
    """Edit a copy of `words` one word at a time until its 3-gram Jaccard to the original <= target."""
    base = _shingle_set(words)
    cur = list(words)
    jac = 1.0
    while jac > target and len(cur) > 3:
        op = rng.random()
        pos = rng.randrange(len(cur))
        if op < 0.6:
            cur[pos] = rng.choice(vocab)
        elif op < 0.8:
            cur.insert(pos, rng.choice(vocab))
        else:
            del cur[pos]
        jac = _jaccard(base, _shingle_set(cur))
    return cur, jac


def make_corpus(rows: int, *, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(corpus with columns row, text; pairs with a, b, jaccard for every planted pair)."""
    rng = random.Random(seed)
    sentences = [s.split() for s in load_sentences()]
    vocab = sorted({w for s in sentences for w in s})
    n_copies = int(rows * DUP_SHARE)
    n_base = rows - n_copies
    docs: list[list[str]] = []
    for _ in range(n_base):
        length = rng.randint(MIN_WORDS, MAX_WORDS)
        words: list[str] = []
        while len(words) < length:
            words += sentences[rng.randrange(len(sentences))]
        docs.append(words[:length])
    family: dict[int, list[int]] = {}
    pairs: list[tuple[int, int, float]] = []
    for k in range(n_copies):
        src = rng.randrange(n_base)
        target = 1.0 if rng.random() < EXACT_SHARE else rng.uniform(0.5, 1.0)
        words, jac = (list(docs[src]), 1.0) if target >= 1.0 else mutate(docs[src], target, vocab, rng)
        idx = n_base + k
        docs.append(words)
        pairs.append((src, idx, jac))
        family.setdefault(src, []).append(idx)
    # copies of one source are near-duplicates of each other too: exact Jaccard for each pair
    for members in family.values():
        sets = {m: _shingle_set(docs[m]) for m in members}
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                pairs.append((a, b, _jaccard(sets[a], sets[b])))
    # shuffle row order so copies are not all at the end (matters for keep="earliest")
    perm = list(range(rows))
    rng.shuffle(perm)  # new position of old row i is perm[i]
    texts = [""] * rows
    for old, new in enumerate(perm):
        texts[new] = " ".join(docs[old])
    corpus = pl.DataFrame({"row": pl.int_range(rows, eager=True), "text": texts})
    a = [perm[p[0]] for p in pairs]
    b = [perm[p[1]] for p in pairs]
    pair_frame = pl.DataFrame(
        {"a": [min(x, y) for x, y in zip(a, b)], "b": [max(x, y) for x, y in zip(a, b)], "jaccard": [p[2] for p in pairs]},
        schema={"a": pl.Int64, "b": pl.Int64, "jaccard": pl.Float64},
    )
    return corpus, pair_frame


def corpus_paths(out: Path) -> tuple[Path, Path]:
    return out, out.with_name(out.stem + ".pairs.parquet")


def ensure_corpus(rows: int, out: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Generate the corpus files unless they already exist (they are deterministic in rows, seed)."""
    text_path, pair_path = corpus_paths(out)
    if not (text_path.exists() and pair_path.exists()):
        corpus, pairs = make_corpus(rows, seed=seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        corpus.write_parquet(text_path)
        pairs.write_parquet(pair_path)
    return text_path, pair_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    text_path, pair_path = ensure_corpus(args.rows, args.out, seed=args.seed)
    print(f"wrote {text_path} and {pair_path}")


if __name__ == "__main__":
    main()
