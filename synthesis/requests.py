"""The prompts of synthesis: generation requests per class, and the label check's requests.

    pending = render_generation_requests(tpl, {"card_arrival": 4}, rows_by_class(train), config=config,
                                         labels=labels, seed=0, attempt=1)
    check = LabelCheck(check_tpl, train, config=config, labels=labels, seed=0)
    verdicts = check.verdicts(reqs := check.requests(texts), generator.generate(reqs))

A generation round draws the few-shot rows once per (class, attempt), so their block is
a prompt prefix vLLM's prefix cache shares; each request gets its own seed. A label
check shows each text fixed real rows (one per class) or the real rows nearest to it
(synthesis/nearest.py), never the rows it was written from.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import polars as pl

from core.config import Config
from synthesis.generate import Generation, Request, derive_seed, parse_output
from synthesis.nearest import NearestRows
from synthesis.templates import PromptTemplate


def rows_by_class(train: pl.DataFrame) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in train.select("row_id", "input", "output", "label").sort("row_id").iter_rows(named=True):
        groups[r["label"]].append(r)
    return groups


@dataclass
class Pending:
    """A rendered request and what its rows will carry."""

    request: Request
    label: str
    output: str
    attempt: int
    seed: int
    few_shot_ids: list[str]


def steer_shots(by_class: dict[str, list[dict]], focus: dict[str, list[str]], k: int) -> dict[str, list[dict]]:
    """Per class with focus texts (the eval rows the tuned model was least sure of), the class's real rows nearest
    to them: each text's k nearest, in focus order and nearest first, each row once, so every focus text has its
    nearest rows in the pool. Only the rows are shown to the generator, never the focus texts, which stay eval rows."""
    out: dict[str, list[dict]] = {}
    for label, texts in focus.items():
        rows = by_class.get(label, [])
        if not rows or not texts:
            continue
        taken: dict[str, dict] = {}
        for near in NearestRows(rows).nearest(texts, k):
            for r in reversed(near):  # nearest first
                taken.setdefault(r["row_id"], r)
        out[label] = list(taken.values())
    return out


def render_generation_requests(
    tpl: PromptTemplate, counts: dict[str, int], by_class: dict[str, list[dict]], *, config: Config,
    labels: list[str], seed: int, attempt: int, prefer: dict[str, list[dict]] | None = None,
) -> list[Pending]:
    """`counts[label]` requests per class; few-shot drawn once per (class, attempt) -> shared prefix.

    `prefer[label]` (steer_shots): the few-shot rows are drawn from these first, the rest of the class fills
    any places left."""
    h = tpl.header
    out: list[Pending] = []
    for label in sorted(counts):
        rows = by_class.get(label, [])
        rng = random.Random(derive_seed(seed, "few_shot", tpl.hash, label, attempt))
        pool = (prefer or {}).get(label, [])
        shots = rng.sample(pool, min(h.few_shot, len(pool)))
        ids = {r["row_id"] for r in shots}
        rest = [r for r in rows if r["row_id"] not in ids]
        shots += rng.sample(rest, min(h.few_shot - len(shots), len(rest)))
        shot_ids = [r["row_id"] for r in shots]
        others = [r for r in rows if r["row_id"] not in set(shot_ids)] or rows
        for i in range(counts[label]):
            req_seed = derive_seed(seed, "request", tpl.hash, label, attempt, i)
            if config.task.kind == "classification":
                target = label
            else:  # a real output of the class, preferably one not shown in the few-shot block
                target = random.Random(req_seed).choice(others)["output"]
            ctx = {"label": label, "labels": labels, "examples": shots, "output": target,
                   "instruction": config.task.instruction, "task": config.name}
            sampling = {**h.sampling.model_dump(), "seed": req_seed}
            choices = labels if h.parse.choices == "labels" else h.parse.choices
            req = Request(tpl.messages(**ctx), sampling, h.parse, choices)
            out.append(Pending(req, label, target, attempt, req_seed, shot_ids))
    return out


def render_check_requests(tpl: PromptTemplate, texts: Sequence[str], shots: Sequence[list[dict]], *, config: Config,
                          labels: list[str], seed: int) -> list[Request]:
    """One label-check request per text; `shots[i]` are the examples text i is shown (CheckShots)."""
    h = tpl.header
    choices = labels if h.parse.choices in (None, "labels") else list(h.parse.choices)
    greedy = h.sampling.temperature == 0
    sampling = {**h.sampling.model_dump(), "n": 1, "seed": None if greedy else derive_seed(seed, "label_check")}
    return [
        Request(tpl.messages(text=t, labels=labels, examples=ex, instruction=config.task.instruction, task=config.name),
                sampling, h.parse, choices)
        for t, ex in zip(texts, shots, strict=True)
    ]


def draw_check_shots(train: pl.DataFrame, k: int, seed: int) -> list[dict]:
    """k real rows across classes, one per class first (never chosen by any synthetic row's class)."""
    by_class = rows_by_class(train)
    rng = random.Random(derive_seed(seed, "check_shots"))
    classes = sorted(by_class)
    rng.shuffle(classes)
    shots = [rng.choice(by_class[c]) for c in classes[:k]]
    return shots


class CheckShots:
    """The real rows a label-check template shows each text, by its header's `shots`.

    fixed: the same draw for every text (draw_check_shots), a shared prompt prefix.
    nearest: the few_shot real rows most like each text (synthesis/nearest.py), minus the
    rows it must not see (those it was written from, or itself when a real row is checked).
    """

    def __init__(self, tpl: PromptTemplate, train: pl.DataFrame, seed: int):
        self.k = tpl.header.few_shot
        self.fixed = draw_check_shots(train, self.k, seed) if tpl.header.shots == "fixed" else None
        self.index = None
        if self.fixed is None:
            self.index = NearestRows(train.select("row_id", "input", "output", "label").to_dicts())

    def for_texts(self, texts: Sequence[str], exclude: Sequence[Sequence[str]] | None = None) -> list[list[dict]]:
        if self.fixed is not None:
            return [self.fixed] * len(texts)
        return self.index.nearest(texts, self.k, exclude=exclude)


class LabelCheck:
    """The label check, as the stage, `curate templates try` and `render` run it: each text
    with its shots (CheckShots), rendered by the check template, and the model's label parsed."""

    def __init__(self, tpl: PromptTemplate, train: pl.DataFrame, *, config: Config, labels: list[str], seed: int):
        self.tpl, self.config, self.labels, self.seed = tpl, config, labels, seed
        self.shots = CheckShots(tpl, train, seed)

    def requests(self, texts: Sequence[str], exclude: Sequence[Sequence[str]] | None = None) -> list[Request]:
        """One request per text; `exclude[i]` are row ids text i must not be shown."""
        shots = self.shots.for_texts(texts, exclude=exclude)
        return render_check_requests(self.tpl, texts, shots, config=self.config, labels=self.labels, seed=self.seed)

    @staticmethod
    def verdicts(requests: Sequence[Request], outputs: Sequence[list[Generation]]) -> list[tuple[str | None, str | None, str | None]]:
        """(label, reason, detail) per request: the label the model said, or why none parsed."""
        return [parse_output(o[0], r.parse, choices=r.choices) for r, o in zip(requests, outputs, strict=True)]
