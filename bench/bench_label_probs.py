"""The label distribution's cost against its pruning (trainers/confidence.py), side by side on one engine.

    .venv/bin/python bench/bench_label_probs.py --adapter RUN/adapter [--rows 50] [--min-prob 1e-2,1e-3,1e-4]

Serves the adapter merged into its base in one vLLM engine (as evaluation does), takes the first `rows`
eval rows of the snapshot it was trained on, and walks the label trie at each pruning threshold: engine
calls and nodes asked per depth, seconds, the largest mass a row lost to pruning, and how many rows'
top label is right. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from core.config import EngineConfig
from core.engine_pool import build_engine
from trainers.confidence import LabelTrie, label_distribution, vllm_next_logprobs
from trainers.format import PromptFormat, read_rows
from trainers.predict import merge_adapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--min-prob", default="1e-2,1e-3,1e-4")
    parser.add_argument("--work", type=Path, default=Path("bench/out/label-probs"))
    args = parser.parse_args()
    fmt = PromptFormat.load(args.adapter)
    trie = LabelTrie.build(fmt, fmt.task.labels)
    engine = EngineConfig()
    llm = build_engine(merge_adapter(args.adapter, args.work / "merged-model", dtype=engine.dtype), engine, seed=0)
    snapshot = json.loads((args.adapter / "train_meta.json").read_text())["snapshot"]
    rows = sorted(read_rows(snapshot, "eval"), key=lambda r: r["row_id"])[: args.rows]
    prompts = [fmt.encode(r["input"]).prompt_ids for r in rows]
    ask = vllm_next_logprobs(llm)
    results = []
    for min_prob in (float(x) for x in args.min_prob.split(",")):
        calls: list[int] = []

        def counted(batch):
            calls.append(len(batch))
            return ask(batch)

        started = time.perf_counter()
        dists = label_distribution(prompts, trie, counted, min_prob=min_prob)
        results.append({
            "min_prob": min_prob, "seconds": round(time.perf_counter() - started, 1), "engine_calls": len(calls),
            "nodes": sum(calls), "nodes_per_depth": calls, "max_pruned": round(max(d.pruned for d in dists), 4),
            "top_label_right": sum(d.best[0] == r["output"] for d, r in zip(dists, rows)), "rows": len(rows),
            "mean_top_probability": round(sum(d.best[1] for d in dists) / len(dists), 4),
        })
    print(json.dumps({"adapter": str(args.adapter), "labels": len(trie.sequences),
                      "longest_label_tokens": max(map(len, trie.sequences.values())), "results": results}, indent=2))


if __name__ == "__main__":
    main()
