"""Evaluate a tuned adapter against its base model (zero- and few-shot) on a snapshot's eval split.

    curate eval --adapter data/runs/adapters/banking77/<run>/adapter
    curate eval --snapshot viggo --base-only --engine transformers --max-examples 50
    report = evaluate(adapter_dir, snapshot_dir, engine_config=config.model.engine, seed=config.seed)

Every system sees prompts from the same `PromptFormat.encode`: the tuned model with the
adapter's own format; the base model with the same format plus, for classification, the
label list in the system prompt (a model that was never told the 77 intent names cannot
produce them), zero-shot and with `shots` examples from train as earlier chat turns.
Generation is greedy; vLLM serves base and adapter from one engine (LoRARequest), or
transformers `generate` where vLLM is not wanted. Every vLLM engine is built (core.engine)
from the config's `model.engine` and `seed`, and the report records its arguments.

Metrics
    classification  accuracy, macro-F1 (over the label set), per-class recall, confusion PNG
    generation      parse rate, exact match, slot-level F1 over act(slot[value], ...) MRs
    all             format compliance: the answer ended with the stop token and is a valid output
                    (a known label / an output matching task.output_pattern)

Writes report.json, report.md (side-by-side table), confusion.png and predictions.jsonl
beside the adapter (or into --out).
"""

from __future__ import annotations

import gc
import json
import math
import random
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from core.config import EngineConfig
from core.engine import engine_args
from core.engine_pool import DataParallel, build_engine, engine_count
from core.progress import Progress
from core.train_config import FormatConfig, base_weights, served_as_lora, served_lora_rank
from trainers.confidence import (
    Distribution,
    LabelTrie,
    calibration,
    label_distribution,
    plot_reliability,
    sig,
    transformers_next_logprobs,
    vllm_next_logprobs,
)
from trainers.format import PromptFormat, TaskInfo, read_rows, task_info
from trainers.model_card import META_FILE, write_model_card
from trainers.predict import adapter_base, adapter_method, adapter_rank, generate, generate_vllm, load_model, lora_base, merge_adapter

MR_RE = re.compile(r"^\s*([a-z_]+)\((.*)\)\s*$", re.S)
SLOT_RE = re.compile(r"([a-z_]+)\[([^\[\]]*)\]")


# -- metrics ------------------------------------------------------------------------------------
def score_classification(golds: Sequence[str], preds: Sequence[str], stopped: Sequence[bool],
                         labels: Sequence[str] | None) -> dict:
    """Accuracy, macro-F1 and per-class recall over the label set (gold labels when none is given)."""
    label_list = list(labels) if labels else sorted(set(golds))
    known = set(label_list)
    tp, fp, fn = Counter(), Counter(), Counter()
    for g, p in zip(golds, preds):
        if g == p:
            tp[g] += 1
        else:
            fn[g] += 1
            fp[p] += 1
    f1s, recall = [], {}
    for lab in label_list:
        if tp[lab] + fn[lab] == 0 and fp[lab] == 0:
            continue  # not in the eval split and never predicted: no evidence either way
        prec = tp[lab] / (tp[lab] + fp[lab]) if tp[lab] + fp[lab] else 0.0
        rec = tp[lab] / (tp[lab] + fn[lab]) if tp[lab] + fn[lab] else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        if tp[lab] + fn[lab]:
            recall[lab] = round(rec, 4)
    n = max(len(golds), 1)
    return {
        "n": len(golds),
        "accuracy": sum(g == p for g, p in zip(golds, preds)) / n,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "format_compliance": sum(s and p in known for p, s in zip(preds, stopped)) / n,
        "per_class_recall": recall,
    }


def parse_mr(text: str) -> tuple[str, list[tuple[str, str]]] | None:
    """`act(slot[value], ...)` -> (act, [(slot, value), ...]); None when it does not parse."""
    m = MR_RE.match(text)
    if not m:
        return None
    body = m.group(2).strip()
    slots = SLOT_RE.findall(body)
    if SLOT_RE.sub("", body).replace(",", "").strip():
        return None  # leftovers that are not slot[value] items
    return m.group(1), [(s, v.strip()) for s, v in slots]


def score_structured(golds: Sequence[str], preds: Sequence[str], stopped: Sequence[bool],
                     output_pattern: str | None) -> dict:
    """Parse rate, exact match and micro slot-F1 (the act counts as one more slot)."""
    pattern = re.compile(output_pattern) if output_pattern else None
    tp = n_pred = n_gold = parsed = compliant = 0
    for g, p, s in zip(golds, preds, stopped):
        gp, pp = parse_mr(g), parse_mr(p)
        gold_items = Counter([("__act__", gp[0])] + gp[1]) if gp else Counter()
        pred_items = Counter([("__act__", pp[0])] + pp[1]) if pp else Counter()
        parsed += pp is not None
        compliant += bool(s and pp is not None and (pattern is None or pattern.fullmatch(p)))
        tp += sum((gold_items & pred_items).values())
        n_pred += sum(pred_items.values())
        n_gold += sum(gold_items.values())
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_gold if n_gold else 0.0
    n = max(len(golds), 1)
    return {
        "n": len(golds),
        "parse_rate": parsed / n,
        "exact_match": sum(g.strip() == p.strip() for g, p in zip(golds, preds)) / n,
        "slot_f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
        "format_compliance": compliant / n,
    }


def confusion(golds: Sequence[str], preds: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Rows gold, columns predicted; a last column counts answers outside the label set."""
    idx = {lab: i for i, lab in enumerate(labels)}
    cm = [[0] * (len(labels) + 1) for _ in labels]
    for g, p in zip(golds, preds):
        if g in idx:
            cm[idx[g]][idx.get(p, len(labels))] += 1
    return cm


def plot_confusion(cm: list[list[int]], labels: Sequence[str], path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arr = np.array(cm, dtype=float)
    rows = arr.sum(axis=1, keepdims=True)
    norm = np.divide(arr, rows, out=np.zeros_like(arr), where=rows > 0)
    size = max(6, 0.16 * len(labels) + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels) + 1), list(labels) + ["(other)"], rotation=90, fontsize=5 if len(labels) > 30 else 8)
    ax.set_yticks(range(len(labels)), list(labels), fontsize=5 if len(labels) > 30 else 8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)


def score(task: TaskInfo, golds: Sequence[str], preds: Sequence[str], stopped: Sequence[bool]) -> dict:
    if task.kind == "classification":
        return score_classification(golds, preds, stopped, task.labels)
    return score_structured(golds, preds, stopped, task.output_pattern)


# -- running the systems ------------------------------------------------------------------------
def pick_shots(train_rows: list[dict], k: int, seed: int) -> list[tuple[str, str]]:
    """k training examples with distinct labels where possible (seeded)."""
    rows = sorted(train_rows, key=lambda r: r["row_id"])
    random.Random(seed).shuffle(rows)
    shots, seen = [], set()
    for r in rows:
        if len(shots) == k:
            break
        if r["label"] not in seen:
            shots.append((r["input"], r["output"]))
            seen.add(r["label"])
    return shots


def base_format(adapter_fmt: PromptFormat | None, base_model: Path, task: TaskInfo) -> PromptFormat:
    """The format for the bare base model: the adapter's template, stop token and instruction, plus
    the label list for classification (the same `PromptFormat.encode` renders it)."""
    if adapter_fmt is None:
        return PromptFormat.from_model(base_model, task, FormatConfig(include_labels=True))
    spec = adapter_fmt.spec
    cfg = FormatConfig(include_labels=True, stop_token=spec.stop_token, add_special_tokens=spec.add_special_tokens)
    fmt = PromptFormat.from_tokenizer(adapter_fmt.tokenizer, task, cfg)
    return PromptFormat(replace(fmt.spec, chat_template=spec.chat_template, template_source=spec.template_source),
                        adapter_fmt.tokenizer)


def answer_budget(fmt: PromptFormat, golds: Sequence[str], task: TaskInfo) -> int:
    """New tokens an answer may take: the longest gold answer or label plus slack, enough for any valid one."""
    answers = list(golds) + (list(task.labels) if task.kind == "classification" and task.labels else [])
    return max(len(fmt.tokenizer(g, add_special_tokens=False)["input_ids"]) for g in answers) + 8


def evaluate(adapter_dir: str | Path | None, snapshot_dir: str | Path, *, base_model: str | Path | None = None,
             task_cfg: Any = None, engine: str = "vllm", shots: int = 5, baseline: bool = True,
             max_examples: int | None = None, out_dir: str | Path | None = None, seed: int = 0,
             max_new_tokens: int | None = None, guided: bool = True, merged: bool = False,
             engine_config: EngineConfig | None = None, base_guided: bool = True,
             parallel: DataParallel | None = None, label_probs: bool = False) -> dict:
    """Evaluate the adapter (if any) and, with baseline, the base model zero-/few-shot; write the report.

    With `guided` (classification, vLLM), the tuned model (and with `base_guided` the base model)
    is also scored with its answer constrained to the label set (vLLM guided choice): how the
    model is served in practice. The free systems measure what the model learned on its own
    (format compliance). vLLM engines are built from `engine_config` (a config's `model.engine`;
    its defaults when None) and `seed`, which also draws the few-shot rows and the eval sample.
    With `parallel` (runner.engines on Ray), each engine is that many engines on Ray actors, every
    call's rows split over them in order (core/engine_pool.py): the same predictions, in the same order.
    Progress (rows per system, an ETA) goes to the `curate.progress` logger (core.progress).

    Confidence (trainers/confidence.py): every answer's probability under its model is recorded, and
    the tuned systems' calibration reported (ECE, reliability.png). With `label_probs` (classification)
    the tuned model's distribution over the label set is computed for every row too: its top labels go
    into predictions.jsonl, its calibration beside the answers'.
    """
    engine_config = engine_config or EngineConfig()

    snapshot_dir = Path(snapshot_dir)
    if adapter_dir is None and base_model is None:
        raise ValueError("give an adapter folder or a base model")
    base = Path(base_model) if base_model is not None else adapter_base(adapter_dir)
    tuned_fmt = PromptFormat.load(adapter_dir) if adapter_dir is not None else None
    task = tuned_fmt.task if tuned_fmt is not None and tuned_fmt.spec.task else task_info(snapshot_dir, task_cfg)
    rows = read_rows(snapshot_dir, "eval")
    if max_examples is not None:
        rows = sorted(rows, key=lambda r: r["row_id"])
        random.Random(seed).shuffle(rows)
        rows = rows[:max_examples]
    golds = [r["output"] for r in rows]
    ref_fmt = tuned_fmt or base_format(None, base, task)
    if max_new_tokens is None:
        max_new_tokens = answer_budget(ref_fmt, golds, task)

    choice = list(task.labels) if guided and engine == "vllm" and task.kind == "classification" and task.labels else None
    systems: list[tuple[str, PromptFormat, list[tuple[str, str]], bool, list[str] | None]] = []
    if tuned_fmt is not None:
        systems.append(("tuned", tuned_fmt, [], True, None))
        if choice:
            systems.append(("tuned, guided choice", tuned_fmt, [], True, choice))
    if baseline or tuned_fmt is None:
        bfmt = base_format(tuned_fmt, base, task)
        systems.append(("base zero-shot", bfmt, [], False, None))
        if choice and base_guided:
            systems.append(("base zero-shot, guided choice", bfmt, [], False, choice))
        if shots > 0:
            systems.append((f"base {shots}-shot", bfmt, pick_shots(read_rows(snapshot_dir, "train"), shots, seed), False, None))

    out = Path(out_dir) if out_dir is not None else (Path(adapter_dir) if adapter_dir is not None else snapshot_dir)
    out.mkdir(parents=True, exist_ok=True)
    method = adapter_method(adapter_dir)
    # how vLLM serves an adapter; nothing else. An adapter vLLM cannot serve as a LoRA request (IA3, AdaLoRA) is always merged.
    merged = (merged or not served_as_lora(method)) and engine == "vllm" and adapter_dir is not None
    # A QLoRA adapter's LoRARequest goes to the base it was trained on (its NF4 round trip; lora8: int8): an
    # engine of its own, where a LoRA adapter's shares the base's engine with the base systems.
    weights = base_weights(method)
    quantized = weights != "base"
    llm, llm_serves, built = None, None, []

    def make_llm(model: Path, rank: int, lora: bool):
        extra = {"enable_lora": lora, "max_lora_rank": served_lora_rank(rank), "max_loras": 1}
        llm = build_engine(model, engine_config, seed=seed, parallel=parallel, **extra)
        built.append({**{k: v for k, v in engine_args(model, engine_config, seed=seed, **extra).items() if k != "model"},
                      "engines": engine_count(llm)})  # runner.engines on Ray
        return llm

    models: dict[bool, Any] = {}
    results, predictions = {}, {}
    distributions: list[Distribution] | None = None
    with Progress("evaluation", total=len(rows) * len(systems), unit="rows") as progress:

        def done(n: int) -> None:
            progress.update(progress.done + n)

        for name, fmt, shot_rows, with_adapter, choices in systems:
            progress.update(progress.done, system=name)
            prompts = [fmt.encode(r["input"], shots=shot_rows).prompt_ids for r in rows]
            if engine == "vllm":
                # merged: the tuned systems run on the merged weights, the base ones on the base (tuned first)
                serves = "base" if not with_adapter else "merged" if merged else "trained-base" if quantized else "base"
                if llm_serves != serves:
                    if llm is not None:
                        llm = None  # the tuned engine goes (its client's finalizer stops it) before the base one starts
                        gc.collect()
                    if serves == "merged":
                        # merged in the dtype the engine computes in: a bf16 merge would round W + BA for a float32 engine
                        llm = make_llm(merge_adapter(adapter_dir, out / "merged-model", dtype=engine_config.dtype), 8, lora=False)
                    elif serves == "trained-base":
                        llm = make_llm(lora_base(adapter_dir, out / "trained-base"), adapter_rank(adapter_dir), lora=True)
                    else:
                        llm = make_llm(base, adapter_rank(adapter_dir), lora=adapter_dir is not None and not merged and not quantized)
                    llm_serves = serves
                gens = generate_vllm(base, fmt, prompts, adapter_dir=adapter_dir if with_adapter and not merged else None,
                                     max_new_tokens=max_new_tokens, llm=llm, choices=choices, on_done=done)
            else:
                if with_adapter not in models:
                    models[with_adapter] = load_model(adapter_dir if with_adapter else None, base)
                gens = generate(models[with_adapter], fmt, prompts, max_new_tokens=max_new_tokens, on_done=done)
            if label_probs and name == "tuned" and task.kind == "classification" and task.labels:
                progress.update(progress.done, step="label distribution")
                asks = (vllm_next_logprobs(llm, adapter_dir=None if merged else adapter_dir) if engine == "vllm"
                        else transformers_next_logprobs(models[True], fmt.pad_id()))
                distributions = label_distribution(prompts, LabelTrie.build(fmt, task.labels), asks)
            preds = [g.answer for g in gens]
            results[name] = score(task, golds, preds, [g.stopped for g in gens])
            results[name]["prompt_tokens_mean"] = round(sum(map(len, prompts)) / max(len(prompts), 1), 1)
            predictions[name] = gens
            main = "accuracy" if task.kind == "classification" else "exact_match"
            progress.log.info("evaluation: %s: %s %.3f, format compliance %.3f", name, main.replace("_", " "),
                              results[name][main], results[name]["format_compliance"])

    report = {
        "snapshot": str(snapshot_dir),
        "adapter": str(adapter_dir) if adapter_dir is not None else None,
        "base_model": str(base),
        "engine": engine,
        # what every vLLM engine of this evaluation was built with (dtype, memory share, seed, ...), model path aside
        "engine_args": built,
        # how vLLM served the adapter: a LoRARequest on the base, or its weights merged into the base
        "adapter_served": None if adapter_dir is None else ("merged" if merged else "lora"),
        # the base weights under the adapter: QLoRA's are the NF4 round trip it was trained on (core.train_config.base_weights)
        "adapter_base_weights": None if adapter_dir is None else weights,
        "task_kind": task.kind,
        "eval_rows": len(rows),
        "shots": shots,
        "systems": results,
        "files": {"markdown": str(out / "report.md"), "predictions": str(out / "predictions.jsonl")},
    }
    if task.kind == "classification" and task.labels:
        first = systems[0][0]
        cm = confusion(golds, [g.answer for g in predictions[first]], task.labels)
        report["confusion"] = {"system": first, "labels": task.labels, "matrix": cm}
        report["files"]["confusion_png"] = str(plot_confusion(cm, task.labels, out / "confusion.png",
                                                               f"{first}: confusion on eval (row-normalized)"))
    report["calibration"] = calibrations(predictions, golds, distributions)
    p_right = None
    if report["calibration"]:
        report["files"]["reliability_png"] = str(plot_reliability(report["calibration"], out / "reliability.png",
                                                                   "tuned model: accuracy against confidence"))
        p_right = right_answer_probs(rows, predictions["tuned"], distributions)
        report["per_class_confidence"] = class_confidence(rows, p_right)
    for folder in ("merged-model", "trained-base"):  # the base's size again: not kept beside every report
        shutil.rmtree(out / folder, ignore_errors=True)
    with open(out / "predictions.jsonl", "w") as fh:
        for i, r in enumerate(rows):
            extra = {"confidence": {name: None if g[i].logprob is None else sig(math.exp(g[i].logprob))
                                    for name, g in predictions.items()}}
            if p_right is not None:
                extra["p_right"] = sig(p_right[i])  # the tuned model's probability of the right answer
            if distributions is not None:
                d = distributions[i]
                extra |= {"label_probs": d.top(), "label_mass": sig(d.mass), "label_pruned": sig(d.pruned)}
            fh.write(json.dumps({"row_id": r["row_id"], "label": r["label"], "gold": r["output"],
                                 **{name: predictions[name][i].answer for name in predictions}, **extra}) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    if adapter_dir is not None and (Path(adapter_dir) / META_FILE).is_file():
        write_model_card(adapter_dir, adapter_dir, report)  # the adapter's card gets its metrics
    return report


def calibrations(predictions: dict[str, list], golds: Sequence[str], distributions: list[Distribution] | None) -> dict:
    """Calibration of each tuned system's answer probability, and of the label distribution's top label."""
    out = {}
    for name, gens in predictions.items():
        if name.startswith("tuned") and gens and all(g.logprob is not None for g in gens):
            out[name] = calibration([math.exp(g.logprob) for g in gens], [g.answer == gold for g, gold in zip(gens, golds)])
    if distributions is not None:
        best = [d.best for d in distributions]
        out["tuned, label distribution"] = calibration([p for _, p in best], [lab == gold for (lab, _), gold in zip(best, golds)])
    return out


def right_answer_probs(rows: Sequence[dict], gens: Sequence, distributions: list[Distribution] | None) -> list[float]:
    """Per row, the tuned model's probability of the right answer: of the gold label in its label distribution
    where there is one, else of its own answer where it was right (0 where wrong)."""
    if distributions is not None:
        return [distributions[i].probs.get(r["output"], 0.0) for i, r in enumerate(rows)]
    return [math.exp(g.logprob) if g.logprob is not None and g.answer == r["output"] else 0.0 for r, g in zip(rows, gens)]


def class_confidence(rows: Sequence[dict], p_right: Sequence[float]) -> dict[str, float]:
    """Per class (the rows' label), the mean of `p_right` (right_answer_probs) over its rows."""
    sums, counts = Counter(), Counter()
    for r, p in zip(rows, p_right, strict=True):
        sums[r["label"]] += p
        counts[r["label"]] += 1
    return {label: round(sums[label] / counts[label], 4) for label in sorted(counts)}


def report_markdown(report: dict) -> str:
    systems = report["systems"]
    cls = report["task_kind"] == "classification"
    cols = ["accuracy", "macro_f1", "format_compliance"] if cls else ["exact_match", "slot_f1", "parse_rate", "format_compliance"]
    lines = [
        f"# Evaluation on {report['snapshot']} ({report['eval_rows']} eval rows, {report['engine']}, greedy)",
        "",
        "| system | " + " | ".join(cols) + " | prompt tokens |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for name, m in systems.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.3f}" for c in cols) + f" | {m['prompt_tokens_mean']} |")
    if cls:
        first = next(iter(systems))
        worst = sorted(systems[first]["per_class_recall"].items(), key=lambda kv: kv[1])[:10]
        lines += ["", f"Lowest per-class recall ({first}): " + ", ".join(f"{k} {v:.2f}" for k, v in worst)]
        if "confusion_png" in report["files"]:
            lines += ["", f"![confusion]({Path(report['files']['confusion_png']).name})"]
    if report.get("calibration"):
        lines += ["", "| confidence of | expected calibration error | mean confidence | accuracy |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {c['ece']:.3f} | {c['mean_confidence']:.3f} | {c['accuracy']:.3f} |"
                  for name, c in report["calibration"].items()]
        lines += ["", f"![reliability]({Path(report['files']['reliability_png']).name})"]
    return "\n".join(lines) + "\n"
