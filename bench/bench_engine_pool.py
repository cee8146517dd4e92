"""Synthesis and evaluation on 1 vs N vLLM engines on Ray actors (runner.engines, core/engine_pool.py).

    .venv/bin/python bench/bench_engine_pool.py --adapter data/runs/adapters/banking77/<run>/adapter
    .venv/bin/python bench/bench_engine_pool.py --adapter DIR --engines 1,2 --dtype float32

For each engine count, in a fresh process (its own local Ray), on the adapter's snapshot:
1. synthesis of the snapshot's balance plan as the first run makes it (configs/banking77.yaml:
   the rarest intents lifted to 21 rows), with its label check: seconds of engine start and
   of generation, from the stage's own totals;
2. the evaluation the first run makes (tuned model merged, free and guided choice, every eval
   row): seconds, and its predictions.
The figures are side by side in one run; the answers of N engines are compared with one
engine's (same rows kept, same predictions). Writes bench/out/engine_pool.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one(adapter: str, engines: int, dtype: str, out: str, share: float) -> dict:
    import polars as pl

    from core.config import load_config
    from core.engine_pool import DataParallel
    from synthesis.synthesize import synthesize
    from trainers.evaluate import evaluate

    adapter_dir = Path(adapter)
    snapshot = json.loads((adapter_dir / "train_meta.json").read_text())["snapshot"]
    ray = ["runner.kind=ray", f"runner.engines={engines}"] if engines > 1 else []
    config = load_config("configs/banking77.yaml", [f"model.engine.dtype={dtype}", f"model.engine.gpu_memory_utilization={share}", *ray])
    plans = sorted(Path("data/cache/banking77/04-balance").glob("*/plan.parquet"), key=lambda p: p.stat().st_mtime)
    balance = plans[-1] if plans else None  # the newest run's
    if balance is None:
        raise SystemExit("no balance plan under data/cache/banking77: run `make run` first")
    rows = pl.read_parquet(balance.parent / "rows.parquet")
    started = time.perf_counter()
    kept, rejects, totals = synthesize(pl.read_parquet(balance), rows.filter(pl.col("split") == "train"),
                                       rows.filter(pl.col("split") == "eval"), config)
    synth_s = time.perf_counter() - started
    started = time.perf_counter()
    report = evaluate(adapter_dir, snapshot, baseline=False, guided=True, merged=True, out_dir=out, seed=config.seed,
                      engine_config=config.model.engine, parallel=DataParallel.from_config(config))
    eval_s = time.perf_counter() - started
    return {
        "engines": engines, "dtype": dtype,
        "synthesis": {"seconds": round(synth_s, 1), "engine_start": totals["seconds"]["engine_start"],
                      "generate": totals["seconds"]["generate"], "label_check": totals["seconds"]["label_check"],
                      "generated": totals["generated"], "kept": totals["kept"], "engines": totals["engines"],
                      "kept_ids": sorted(kept["row_id"].to_list())},
        "evaluation": {"seconds": round(eval_s, 1), "rows": report["eval_rows"],
                       "accuracy": {k: v["accuracy"] for k, v in report["systems"].items()},
                       "engines": [e["engines"] for e in report["engine_args"]]},
        "predictions": (Path(out) / "predictions.jsonl").read_text().splitlines(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", required=True, help="a banking77 adapter folder (train_meta.json names its snapshot)")
    ap.add_argument("--engines", default="1,2", help="engine counts to compare, comma-separated")
    ap.add_argument("--dtype", default="auto", help="model.engine.dtype")
    ap.add_argument("--memory-share", type=float, default=0.15,
                    help="model.engine.gpu_memory_utilization of each engine (0.3, the default, twice on 24 GB trips Ray's OOM killer)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        result = one(args.adapter, args.child, args.dtype, args.out, args.memory_share)
        print("RESULT " + json.dumps(result), flush=True)
        from core.engine import exit_now

        exit_now(0)
    results = []
    for n in [int(x) for x in args.engines.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([sys.executable, __file__, "--adapter", args.adapter, "--dtype", args.dtype, "--memory-share", str(args.memory_share),
                                   "--child", str(n), "--out", tmp], capture_output=True, text=True, cwd=ROOT)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{n} engines failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[len("RESULT "):]))
        r = results[-1]
        print(f"{n} engine(s): synthesis {r['synthesis']['seconds']} s (engine start {r['synthesis']['engine_start']} s, "
              f"generate {r['synthesis']['generate']} s, label check {r['synthesis']['label_check']} s; "
              f"{r['synthesis']['generated']} generated, {r['synthesis']['kept']} kept), "
              f"evaluation {r['evaluation']['seconds']} s over {r['evaluation']['rows']} rows, {r['evaluation']['accuracy']}",
              flush=True)
    ref = results[0]
    for r in results[1:]:
        same = sum(a == b for a, b in zip(ref["predictions"], r["predictions"]))
        r["agreement_with_first"] = {"predictions": f"{same}/{len(ref['predictions'])}",
                                     "synthesis_kept_ids_equal": r["synthesis"]["kept_ids"] == ref["synthesis"]["kept_ids"]}
        print(f"{r['engines']} engines vs {ref['engines']}: {r['agreement_with_first']}")
    out = ROOT / "bench" / "out" / "engine_pool.json"
    out.parent.mkdir(exist_ok=True)
    for r in results:
        r.pop("predictions")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
