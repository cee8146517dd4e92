"""What a template makes before a run: its prompts from real rows, and the model's answers to them.

    reqs = preview_requests(tpl, config, train, n=3, seed=0)               # curate templates render
    results, gen = try_template(tpl, config, train, make_llm(config), n=5)  # curate templates try

A generation template renders one request per class (smallest classes first, with
their few-shot rows); a label-check template one per sampled real row, which it must not
be shown as an example. `try_template` runs them, parses each answer as the stage would,
and for generations asks the label check whether the model agrees with the intended class.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import polars as pl

from core.config import Config
from synthesis.generate import Request, VLLMGenerator, parse_output
from synthesis.requests import LabelCheck, render_generation_requests, rows_by_class
from synthesis.synthesize import resolve_templates, smallest_classes_plan, synthesis_settings
from synthesis.templates import PromptTemplate

log = logging.getLogger(__name__)


def preview_requests(tpl: PromptTemplate, config: Config, train: pl.DataFrame, n: int, seed: int
                     ) -> list[tuple[str, Request, list[str]]]:
    """n (class, request, row ids the label check must not show) triples: generation templates
    one per class (smallest classes first; their few-shot rows), label checks on real rows (the row itself)."""
    labels = config.label_set() or sorted(set(train["label"].to_list()))
    if tpl.header.job == "generate":
        plan = smallest_classes_plan(train.filter(pl.col("label").map_elements(tpl.header.serves, return_dtype=pl.Boolean)), n, 1)
        pending = render_generation_requests(tpl, dict.fromkeys(plan["label"].to_list(), 1), rows_by_class(train),
                                             config=config, labels=labels, seed=seed, attempt=1)
        return [(p.label, p.request, p.few_shot_ids) for p in pending]
    rows = random.Random(seed).sample(train.select("input", "label", "row_id").rows(), min(n, train.height))
    reqs = LabelCheck(tpl, train, config=config, labels=labels, seed=seed).requests([r[0] for r in rows], exclude=[[r[2]] for r in rows])
    return [(r[1], q, [r[2]]) for r, q in zip(rows, reqs)]


def try_template(tpl: PromptTemplate, config: Config, train: pl.DataFrame, llm, *, n: int = 5, seed: int = 0,
                 templates_dir: str | Path = "templates") -> tuple[list[dict], VLLMGenerator]:
    """Run n prompts of a template: per prompt the class, raw output, parsed value (or reason) and label-check verdict."""
    reqs = preview_requests(tpl, config, train, n, seed)
    syn = synthesis_settings(config)
    gen = VLLMGenerator(llm, batch_size=syn.batch_size)
    outs = gen.generate([r for _, r, _ in reqs])
    labels = config.label_set() or sorted(set(train["label"].to_list()))
    parsed = [parse_output(o[0], r.parse, choices=r.choices) for (_, r, _), o in zip(reqs, outs)]
    verdicts = ["" for _ in reqs]
    if tpl.header.job == "generate":
        chk = None
        try:
            _, chk = resolve_templates(config, syn.model_copy(update={"templates_dir": str(templates_dir), "label_check": True}))
        except FileNotFoundError as exc:
            log.warning("no label check: %s", exc)
        ok = [i for i, p in enumerate(parsed) if p[0] is not None]
        if chk is not None and ok:
            check = LabelCheck(chk, train, config=config, labels=labels, seed=seed)
            creqs = check.requests([parsed[i][0] for i in ok], exclude=[reqs[i][2] for i in ok])
            for i, (said, reason, _) in zip(ok, check.verdicts(creqs, gen.generate(creqs))):
                verdicts[i] = reason if said is None else ("agrees" if said == reqs[i][0] else f"disagrees: {said}")
    else:  # a label-check template tried on real rows: the verdict is against their real label
        verdicts = [("agrees" if p[0] == lbl else f"disagrees: {p[0]}") if p[0] is not None else "" for (lbl, _, _), p in zip(reqs, parsed)]
    results = [
        {"class": label, "raw": o[0].text, "finish_reason": o[0].finish_reason, "parsed": value, "reason": reason,
         "detail": detail, "label_check": verdict}
        for (label, _, _), o, (value, reason, detail), verdict in zip(reqs, outs, parsed, verdicts)
    ]
    return results, gen
