"""Synthesis: make the rows a balance plan says are missing, with a local vLLM model.

    rows, rejects, totals = synthesize(plan, train, eval, config)          # builds the engine
    python -m curate.synthesis --config configs/viggo.yaml --classes 3 --per-class 2 --out DIR

Passes, in order, per round (a round is one `attempt`; rounds repeat while a class is
short and `synthesis.max_attempts` allows):

1. render    the generation template per request: few-shot rows of the class (seeded,
             one draw per class and round so the block is a shared prompt prefix for
             vLLM's prefix cache) and, for generation tasks, the target output (a real
             output of the class, e.g. a ViGGO MR).
2. generate  all requests of the round through `vllm.LLM.generate`, batched, one seed per
             request, with structured outputs (JSON schema / regex / choice) from the
             template's `parse` so that outputs parse.
3. parse     raw text -> value; failures are kept rejects (`truncated`, `empty_generation`,
             `unparseable`), never exceptions.
4. clean     curate.stages.clean, exactly as for real rows (normalize, PII, length,
             repetition, blocklist, label/output validity).
5. dedupe    curate.stages.dedupe over real train + eval + synthetic rows kept so far +
             this round's rows: exact and near duplicates of real or synthetic rows, and
             eval contamination. Forced on (exact, near, decontaminate, keep=earliest with
             real rows first) whatever the dedupe config says: no synthetic row may
             (near-)duplicate an eval or real row.
6. label check  the label-check template asks the model (greedy, guided choice among the
             task's labels, few-shot real rows drawn once per run, never by the intended
             class) to label each surviving row; only agreement is kept.
7. budget    rows beyond a class's remaining deficit are `surplus` rejects.

Every generation ends as exactly one kept row or one reject (stage, reason, detail, raw
text); the count is checked. Synthetic rows carry provenance columns (PROVENANCE_SCHEMA).
vllm is imported inside functions: this module imports fast for the data stages' tests.
"""

from __future__ import annotations

import sys


import hashlib
import json
import math
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import polars as pl

from curate.config import Config
from curate.engine import release_free_memory
from curate.io import write_json, write_table
from curate.schema import ROW_COLUMNS, ROW_SCHEMA, AccountingError
from curate.synthesis_config import SynthesisConfig
from curate.templates import ParseSpec, PromptTemplate, check_template, find_template, load_template

PROVENANCE_SCHEMA: dict[str, pl.DataType] = {
    "template": pl.String(),          # generation template name
    "template_hash": pl.String(),     # sha256 of its file (header included)
    "model": pl.String(),
    "seed": pl.Int64(),               # the request's sampling seed
    "sample": pl.Int64(),             # index among the request's n samples
    "sampling": pl.String(),          # JSON of the sampling settings
    "few_shot_ids": pl.List(pl.String()),
    "attempt": pl.Int64(),            # round, 1-based
    "intended_label": pl.String(),
    "check_label": pl.String(),       # what the label check said (null: check off / not reached)
    "check_template_hash": pl.String(),
    "raw": pl.String(),               # the model's raw text
}
SYNTH_SCHEMA = {**ROW_SCHEMA, **PROVENANCE_SCHEMA}
REJECT_SCHEMA = {**SYNTH_SCHEMA, "stage": pl.String(), "reason": pl.String(), "detail": pl.String(), "duplicate_of": pl.String()}

# Reasons (stable: they become metrics)
TRUNCATED, EMPTY, UNPARSEABLE = "truncated", "empty_generation", "unparseable"
PROMPT_TOO_LONG = "prompt_too_long"  # the rendered prompt does not fit the model's context: never sent
LABEL_DISAGREEMENT, LABEL_CHECK_UNPARSEABLE, SURPLUS = "label_disagreement", "label_check_unparseable", "surplus"


# ----------------------------------------------------------------------------------------
# Generation backend: vLLM, or any stand-in with the same `generate`
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str | None  # "stop" | "length" | ...
    n_tokens: int


@dataclass(frozen=True)
class Request:
    """One prompt: chat messages, sampling settings (with its seed), and the parse constraint."""

    messages: list[dict]
    sampling: dict
    parse: ParseSpec
    choices: list[str] | None = None  # resolved choice list for parse kind choice


class Generator(Protocol):
    def generate(self, requests: Sequence[Request]) -> list[list[Generation]]: ...


def structured_outputs(spec: ParseSpec, choices: list[str] | None):
    """The vLLM structured-output constraint for a parse spec (guided decoding)."""
    from vllm.sampling_params import StructuredOutputsParams

    if spec.kind == "json":
        return StructuredOutputsParams(json=spec.json_schema, disable_any_whitespace=True)
    if spec.kind == "regex":
        return StructuredOutputsParams(regex=spec.pattern)
    return StructuredOutputsParams(choice=list(choices or []))


def sampling_params(req: Request):
    from vllm import SamplingParams

    s = req.sampling
    return SamplingParams(
        n=s.get("n", 1), temperature=s["temperature"], top_p=s.get("top_p", 1.0), max_tokens=s["max_tokens"],
        repetition_penalty=s.get("repetition_penalty", 1.0), seed=s["seed"],
        structured_outputs=structured_outputs(req.parse, req.choices),
    )


def _scheduler_budget(llm) -> int | None:
    """Prompt tokens the engine prefills per step when chunked prefill is on (None: off or unknown)."""
    try:
        sched = llm.llm_engine.vllm_config.scheduler_config
    except AttributeError:
        return None
    return int(sched.max_num_batched_tokens) if getattr(sched, "enable_chunked_prefill", False) else None


def pack_by_tokens(lengths: Sequence[int], *, budget: int | None, max_items: int) -> list[tuple[int, int]]:
    """Split consecutive items into [start, stop) chunks of at most max_items and at most `budget` tokens.

    An item longer than the budget gets a chunk of its own.
    """
    chunks, start, used = [], 0, 0
    for i, n in enumerate(lengths):
        full = (i - start) >= max_items or (budget is not None and used + n > budget and i > start)
        if full:
            chunks.append((start, i))
            start, used = i, 0
        used += n
    if start < len(lengths):
        chunks.append((start, len(lengths)))
    return chunks


class VLLMGenerator:
    """Chat-formats and tokenizes requests once, then runs them through `vllm.LLM.generate`.

    Why calls are packed by prompt tokens: vLLM 0.32's CPU build crashes the engine
    ("CPU Generator does not use offset", gpu_model_runner._bookkeeping_sync) when a
    request with a per-request seed is only partly prefilled in a step (chunked prefill):
    it rewinds the request's torch.Generator by an offset, which CPU generators lack.
    Keeping every generate() call within one step's token budget
    (scheduler max_num_batched_tokens, 4096 on the CPU) means every prompt is prefilled
    whole in the first step, so the rewind never runs. With chunked prefill off (or on a
    GPU, whose Philox generators have offsets) there is no budget and `batch_size` rules.

    Keeps `seconds`, `tokens` (generated) and `calls` spent inside generate(), for the
    overhead figure, and `release_seconds` spent handing the engine's freed memory back
    after each call (curate.engine.release_free_memory), with the workers' resident
    memory after it in `worker_rss_mb`.
    """

    def __init__(self, llm, *, batch_size: int = 256, token_budget: int | None | str = "auto", release_memory: bool = True):
        self.llm = llm
        self.release_memory = release_memory
        self.batch_size = batch_size
        self.budget = _scheduler_budget(llm) if token_budget == "auto" else token_budget
        self.seconds = 0.0
        self.tokens = 0
        self.prompt_tokens = 0
        self.calls = 0
        self.release_seconds = 0.0  # in release_free_memory, after each call
        self.worker_rss_mb: list[float | None] = []  # the engine's workers' memory after each call, released
        self._tok = None

    def tokenize(self, requests: Sequence[Request]) -> list[list[int]]:
        if self._tok is None:
            self._tok = self.llm.get_tokenizer()
        texts = [self._tok.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in requests]
        # The chat template already holds the special tokens: add none.
        return [self._tok.encode(t, add_special_tokens=False) for t in texts]

    def max_prompt_tokens(self) -> int | None:
        """The longest prompt the engine accepts (its context window less one token to generate)."""
        try:
            return int(self.llm.llm_engine.model_config.max_model_len) - 1
        except AttributeError:
            return None

    def generate(self, requests: Sequence[Request]) -> list[list[Generation]]:
        ids = self.tokenize(requests)
        limit = self.max_prompt_tokens()
        # A prompt longer than the context window would fail the whole generate() call:
        # it is answered here as a reject (PROMPT_TOO_LONG) and the rest go on.
        fits = [i for i, x in enumerate(ids) if limit is None or len(x) <= limit]
        out: list[list[Generation]] = [[Generation("", PROMPT_TOO_LONG, len(x))] for x in ids]
        ids_fit = [ids[i] for i in fits]
        params = [sampling_params(requests[i]) for i in fits]
        for a, b in pack_by_tokens([len(x) for x in ids_fit], budget=self.budget, max_items=self.batch_size):
            started = time.perf_counter()
            results = self.llm.generate([{"prompt_token_ids": x} for x in ids_fit[a:b]], params[a:b], use_tqdm=False)
            self.seconds += time.perf_counter() - started
            self.calls += 1
            self.prompt_tokens += sum(len(x) for x in ids_fit[a:b])
            for k, res in zip(range(a, b), results):
                gens = [Generation(o.text, o.finish_reason, len(o.token_ids)) for o in res.outputs]
                self.tokens += sum(g.n_tokens for g in gens)
                out[fits[k]] = gens
            # Without this the CPU worker's heap grows faster (curate.engine.WorkerMemory).
            if self.release_memory:
                started = time.perf_counter()
                workers = release_free_memory(self.llm) or []
                self.release_seconds += time.perf_counter() - started
                self.worker_rss_mb.append(sum(w["rss_mb"] for w in workers) or None)
        return out


# ----------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------
def parse_output(gen: Generation, spec: ParseSpec, *, choices: Sequence[str] | None = None) -> tuple[str | None, str | None, str | None]:
    """(value, reason, detail): value is None exactly when reason names why it failed."""
    text = gen.text or ""
    if gen.finish_reason == PROMPT_TOO_LONG:
        return None, PROMPT_TOO_LONG, f"prompt of {gen.n_tokens} tokens does not fit the context window"
    if gen.finish_reason == "length":
        return None, TRUNCATED, f"hit max_tokens after {gen.n_tokens} tokens"
    if not text.strip():
        return None, EMPTY, "the model produced no text"
    if spec.kind == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, UNPARSEABLE, f"invalid JSON: {exc.msg} at {exc.pos}"
        if not isinstance(obj, dict) or spec.field not in obj:
            return None, UNPARSEABLE, f"JSON without the field {spec.field!r}"
        value = obj[spec.field]
        if not isinstance(value, str):
            return None, UNPARSEABLE, f"field {spec.field!r} is {type(value).__name__}, not a string"
        value = value.strip()
        return (value, None, None) if value else (None, EMPTY, f"field {spec.field!r} is empty")
    if spec.kind == "regex":
        import re

        m = re.fullmatch(spec.pattern, text.strip())
        if m is None:
            return None, UNPARSEABLE, "does not match parse.pattern"
        value = m.group("text") if "text" in m.re.groupindex else (m.group(1) if m.re.groups else m.group(0))
        value = (value or "").strip()
        return (value, None, None) if value else (None, EMPTY, "the matched text is empty")
    value = text.strip()
    if choices is not None and value not in choices:
        return None, UNPARSEABLE, f"{value[:60]!r} is not one of the choices"
    return value, None, None


# ----------------------------------------------------------------------------------------
# Seeds, ids, provenance
# ----------------------------------------------------------------------------------------
def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any parts (hashlib: stable across processes and versions)."""
    blob = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


def synthetic_row_id(template_hash: str, seed: int, sample: int, intended_label: str, text: str) -> str:
    """row_id = hash of ("synthetic", template hash, seed, intended label, text) (+ sample index when n > 1)."""
    parts = ["synthetic", template_hash, str(seed), intended_label, text] + ([str(sample)] if sample else [])
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def model_name(config: Config) -> str:
    from curate.model import DEFAULT_MODEL_DIR

    return str(config.model.path or DEFAULT_MODEL_DIR)


def synthesis_settings(config: Config, override: SynthesisConfig | None = None) -> SynthesisConfig:
    if override is not None:
        return override
    return getattr(config, "synthesis", None) or SynthesisConfig()


def resolve_templates(config: Config, syn: SynthesisConfig) -> tuple[PromptTemplate, PromptTemplate | None]:
    """The generation template and (label_check on) the label-check template for this task."""
    d = syn.templates_dir
    gen = load_template(syn.template, d) if syn.template else find_template(d, job="generate", config_name=config.name, kind=config.task.kind)
    chk = None
    if syn.label_check:
        chk = (load_template(syn.label_check_template, d) if syn.label_check_template
               else find_template(d, job="label_check", config_name=config.name, kind=config.task.kind))
    return gen, chk


# ----------------------------------------------------------------------------------------
# Rendering requests
# ----------------------------------------------------------------------------------------
def _rows_by_class(train: pl.DataFrame) -> dict[str, list[dict]]:
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


def render_generation_requests(
    tpl: PromptTemplate, counts: dict[str, int], by_class: dict[str, list[dict]], *, config: Config,
    labels: list[str], seed: int, attempt: int,
) -> list[Pending]:
    """`counts[label]` requests per class; few-shot drawn once per (class, attempt) -> shared prefix."""
    h = tpl.header
    out: list[Pending] = []
    for label in sorted(counts):
        rows = by_class.get(label, [])
        rng = random.Random(derive_seed(seed, "few_shot", tpl.hash, label, attempt))
        shots = rng.sample(rows, min(h.few_shot, len(rows)))
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
    by_class = _rows_by_class(train)
    rng = random.Random(derive_seed(seed, "check_shots"))
    classes = sorted(by_class)
    rng.shuffle(classes)
    shots = [rng.choice(by_class[c]) for c in classes[:k]]
    return shots


class CheckShots:
    """The real rows a label-check template shows each text, by its header's `shots`.

    fixed: the same draw for every text (draw_check_shots), a shared prompt prefix.
    nearest: the few_shot real rows most like each text (curate/nearest.py), minus the
    rows it must not see (those it was written from, or itself when a real row is checked).
    """

    def __init__(self, tpl: PromptTemplate, train: pl.DataFrame, seed: int):
        self.k = tpl.header.few_shot
        self.fixed = draw_check_shots(train, self.k, seed) if tpl.header.shots == "fixed" else None
        self.index = None
        if self.fixed is None:
            from curate.nearest import NearestRows

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


# ----------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------
@dataclass
class _Round:
    rows: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)


def _reject(row: dict, stage: str, reason: str, detail: str | None, duplicate_of: str | None = None) -> dict:
    return {**{k: row.get(k) for k in SYNTH_SCHEMA}, "stage": stage, "reason": reason, "detail": detail, "duplicate_of": duplicate_of}


def _frame(rows: list[dict], schema: dict) -> pl.DataFrame:
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema) if rows else pl.DataFrame(schema=schema)


def _strict_dedupe_config(config: Config) -> Config:
    d = config.dedupe
    dedupe = d.model_copy(update={
        "exact": d.exact.model_copy(update={"enabled": True}),
        "near": d.near.model_copy(update={"enabled": True, "keep": "earliest"}),
        "decontaminate": True,
    })
    return config.model_copy(update={"dedupe": dedupe})


def _check_inputs(plan: pl.DataFrame, train: pl.DataFrame, eval: pl.DataFrame) -> None:  # noqa: A002
    problems = []
    for name, frame, cols in (("plan", plan, ("label", "synth")), ("train", train, ("row_id", "input", "output", "label")),
                              ("eval", eval, ("row_id", "input"))):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            problems.append(f"{name} lacks columns {missing} (has {frame.columns})")
    if problems:
        raise ValueError("synthesize: " + "; ".join(problems))


def synthesize(
    plan: pl.DataFrame,
    train: pl.DataFrame,
    eval: pl.DataFrame,  # noqa: A002 - the pipeline's name for the split
    config: Config,
    *,
    llm=None,
    generator: Generator | None = None,
    synthesis: SynthesisConfig | None = None,
    root: Path | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Make the plan's missing rows. Returns (synthetic rows, rejects, totals).

    Input columns: plan `label`, `synth` (rows to make); train and eval in the row schema
    (train needs row_id, input, output, label; eval row_id, input).
    Output: synthetic rows in SYNTH_SCHEMA (row schema + provenance, synthetic=true,
    split "train"); rejects in REJECT_SCHEMA (+ stage, reason, detail, duplicate_of);
    totals for the manifest (per class, per stage and reason, label agreement).

    Templates are linted and checked against the frames before the model starts (a bad
    template raises TemplateProblemError and nothing runs). `llm` is a `vllm.LLM` (made
    from the config when neither it nor `generator` is given); `generator` is any object
    with `generate(requests) -> [[Generation]]` (tests use stand-ins).
    """
    from curate.stages import clean, dedupe

    started = time.perf_counter()
    syn = synthesis_settings(config, synthesis)
    _check_inputs(plan, train, eval)
    labels = config.label_set(root) or sorted(set(train["label"].to_list()))
    gen_tpl, chk_tpl = resolve_templates(config, syn)
    check_template(gen_tpl, config=config, columns=train.columns, job="generate")
    if chk_tpl is not None:
        check_template(chk_tpl, config=config, columns=train.columns, job="label_check")

    wanted = {r["label"]: int(r["synth"]) for r in plan.select("label", "synth").iter_rows(named=True) if (r["synth"] or 0) > 0}
    by_class = _rows_by_class(train)
    skipped = {}
    for label in sorted(wanted):
        if not gen_tpl.header.serves(label):
            skipped[label] = "template_does_not_serve_class"
        elif config.task.kind == "generation" and not by_class.get(label):
            skipped[label] = "no_real_rows"  # nothing to take the target output from
    planned = dict(wanted)
    for label in skipped:
        wanted.pop(label)

    engine_seconds = 0.0
    if generator is None and wanted:
        if llm is None:
            from curate.engine import make_llm

            t0 = time.perf_counter()
            llm = make_llm(config)
            engine_seconds = time.perf_counter() - t0
        generator = VLLMGenerator(llm, batch_size=syn.batch_size)

    model = model_name(config)
    sampling_json = json.dumps(gen_tpl.header.sampling.model_dump(), sort_keys=True)
    check = LabelCheck(chk_tpl, train, config=config, labels=labels, seed=syn.seed) if chk_tpl is not None else None
    real = train.select(ROW_COLUMNS).with_columns(split=pl.lit("train"))
    ev = eval.select(ROW_COLUMNS).with_columns(split=pl.lit("eval")) if set(ROW_COLUMNS) <= set(eval.columns) else None
    strict = _strict_dedupe_config(config)

    kept: list[dict] = []
    rejects: list[dict] = []
    deficit = dict(wanted)
    generated = Counter()
    kept_n = Counter()
    agree = Counter()
    checked = Counter()
    gen_seconds = 0.0
    check_seconds = 0.0
    line = 0
    for attempt in range(1, syn.max_attempts + 1):
        short = {l: d for l, d in deficit.items() if d > 0}
        if not short:
            break
        counts = {}
        for label, d in short.items():
            yield_ = kept_n[label] / generated[label] if generated[label] else None
            factor = syn.oversample if not yield_ else min(max(syn.oversample, syn.oversample / yield_), syn.max_oversample)
            if yield_ == 0.0:
                factor = syn.max_oversample
            counts[label] = math.ceil(d * factor / gen_tpl.header.sampling.n)
        pending = render_generation_requests(gen_tpl, counts, by_class, config=config, labels=labels, seed=syn.seed, attempt=attempt)
        t0 = time.perf_counter()
        outs = generator.generate([p.request for p in pending])
        gen_seconds += time.perf_counter() - t0

        # parse
        cands: list[dict] = []
        for p, gens in zip(pending, outs):
            for sample, g in enumerate(gens):
                line += 1
                generated[p.label] += 1
                value, reason, detail = parse_output(g, p.request.parse, choices=p.request.choices)
                row = {
                    "row_id": synthetic_row_id(gen_tpl.hash, p.seed, sample, p.label, value if value is not None else g.text),
                    "split": "train", "source": f"synthetic:{gen_tpl.name}", "line": line, "input": value,
                    "output": p.output, "label": p.label, "pii": [], "synthetic": True,
                    "template": gen_tpl.name, "template_hash": gen_tpl.hash, "model": model, "seed": p.seed,
                    "sample": sample, "sampling": sampling_json, "few_shot_ids": p.few_shot_ids, "attempt": attempt,
                    "intended_label": p.label, "check_label": None,
                    "check_template_hash": chk_tpl.hash if chk_tpl else None, "raw": g.text,
                }
                if reason is not None:
                    rejects.append(_reject(row, "generate", reason, detail))
                else:
                    cands.append(row)
        if not cands:
            continue
        prov = {r["row_id"]: r for r in cands}

        # clean, as for real rows
        c_kept, c_dropped, _ = clean(_frame(cands, ROW_SCHEMA), config, root=root)
        for d in c_dropped.iter_rows(named=True):
            rejects.append(_reject({**prov[d["row_id"]], **{k: d[k] for k in ROW_COLUMNS}}, "clean", d["reason"], d["detail"]))
        survivors = [{**prov[r["row_id"]], **r} for r in c_kept.iter_rows(named=True)]

        # dedupe against real train, eval, earlier synthetic rows and each other (real rows first: they win)
        if survivors:
            parts = [real, _frame(kept, ROW_SCHEMA), _frame(survivors, ROW_SCHEMA)] + ([ev] if ev is not None else [])
            frame = pl.concat([p.select(ROW_COLUMNS).cast(ROW_SCHEMA) for p in parts])
            _, d_dropped, _ = dedupe(frame, strict)
            ids = {r["row_id"] for r in survivors}
            drops = {d["row_id"]: d for d in d_dropped.filter(pl.col("row_id").is_in(list(ids))).iter_rows(named=True)}
            nxt = []
            for r in survivors:
                d = drops.get(r["row_id"])
                if d is None:
                    nxt.append(r)
                else:
                    rejects.append(_reject(r, "dedupe", d["reason"], d["detail"], d["duplicate_of"]))
            survivors = nxt

        # label check: the model labels each row without its intended class
        if chk_tpl is not None and survivors:
            reqs = check.requests([r["input"] for r in survivors], exclude=[r["few_shot_ids"] for r in survivors])
            t0 = time.perf_counter()
            outs = generator.generate(reqs)
            check_seconds += time.perf_counter() - t0
            nxt = []
            for r, gens, (said, reason, detail) in zip(survivors, outs, check.verdicts(reqs, outs), strict=True):
                r["check_label"] = said if said is not None else gens[0].text
                checked[r["label"]] += 1
                if reason is not None:
                    rejects.append(_reject(r, "label_check", LABEL_CHECK_UNPARSEABLE, f"{reason}: {detail}"))
                elif said != r["label"]:
                    rejects.append(_reject(r, "label_check", LABEL_DISAGREEMENT, f"model says {said!r}"))
                else:
                    agree[r["label"]] += 1
                    nxt.append(r)
            survivors = nxt

        # budget
        for r in survivors:
            if deficit[r["label"]] > 0:
                deficit[r["label"]] -= 1
                kept_n[r["label"]] += 1
                kept.append(r)
            else:
                rejects.append(_reject(r, "budget", SURPLUS, "the class's budget was already met"))

    rows_df = _frame(kept, SYNTH_SCHEMA)
    rej_df = _frame(rejects, REJECT_SCHEMA)
    total_generated = sum(generated.values())
    if rows_df.height + rej_df.height != total_generated:
        raise AccountingError(f"synthesis: generated {total_generated} != kept {rows_df.height} + rejected {rej_df.height}")
    totals = summarize(planned, generated, kept_n, rej_df, agree, checked, skipped)
    totals |= {
        "template": {"name": gen_tpl.name, "hash": gen_tpl.hash, "version": gen_tpl.header.version},
        "label_check_template": {"name": chk_tpl.name, "hash": chk_tpl.hash} if chk_tpl else None,
        "model": model,
        "seed": syn.seed,
        # overhead = everything but the engine start and the model calls: render, parse, clean, dedupe, bookkeeping
        "seconds": {
            "total": round(total_s := time.perf_counter() - started, 3), "engine_start": round(engine_seconds, 3),
            "generate": round(gen_seconds, 3), "label_check": round(check_seconds, 3),
            "overhead": round(total_s - engine_seconds - gen_seconds - check_seconds, 3),
        },
    }
    return rows_df, rej_df, totals


def summarize(wanted: dict, generated: Counter, kept: Counter, rejects: pl.DataFrame, agree: Counter, checked: Counter, skipped: dict) -> dict:
    """Totals per class and per (stage, reason), as plain dicts for the snapshot manifest."""
    by_class = {}
    for label in sorted(wanted):
        rej = rejects.filter(pl.col("intended_label") == label)
        by_class[label] = {
            "target": wanted.get(label, 0),
            "generated": generated[label],
            "kept": kept[label],
            "rejected": dict(sorted(Counter(rej["reason"].to_list()).items())),
            "label_checked": checked[label],
            "label_agreement": round(agree[label] / checked[label], 4) if checked[label] else None,
            **({"skipped": skipped[label]} if label in skipped else {}),
        }
    by_reason: dict[str, dict[str, int]] = defaultdict(dict)
    for (stage, reason), n in sorted(Counter(zip(rejects["stage"].to_list(), rejects["reason"].to_list())).items()):
        by_reason[stage][reason] = n
    n_checked = sum(checked.values())
    return {
        "requested": sum(wanted.values()),
        "generated": sum(generated.values()),
        "kept": sum(kept.values()),
        "rejected": rejects.height,
        "label_agreement": round(sum(agree.values()) / n_checked, 4) if n_checked else None,
        "by_class": by_class,
        "by_reason": dict(by_reason),
        "skipped": skipped,
    }


# ----------------------------------------------------------------------------------------
# Entry point (a real engine in a spawned process needs the __main__ guard)
# ----------------------------------------------------------------------------------------
def load_frames(config: Config, snapshot: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """(train, eval, where): rows of a snapshot (default: the config's latest), else the ingested sample."""
    from curate.snapshot import resolve_snapshot

    try:
        folder = resolve_snapshot(snapshot or config.name, config.output.snapshots)
    except FileNotFoundError:
        if snapshot is not None:
            raise
        from curate.ingest import ingest

        rows, _, _ = ingest(config)
        return rows.filter(pl.col("split") == "train"), rows.filter(pl.col("split") == "eval"), "ingested sample (no snapshot yet)"
    return pl.read_parquet(Path(folder) / "train.parquet"), pl.read_parquet(Path(folder) / "eval.parquet"), str(folder)


def smallest_classes_plan(train: pl.DataFrame, classes: int, per_class: int) -> pl.DataFrame:
    """A stand-in plan: the `classes` smallest classes get `per_class` synthetic rows each."""
    counts = train.group_by("label").agg(real=pl.len()).sort(["real", "label"]).head(classes)
    return counts.with_columns(synth=pl.lit(per_class, dtype=pl.Int64))


def main(argv: list[str] | None = None) -> None:
    import argparse

    from curate.config import load_config

    ap = argparse.ArgumentParser(prog="python -m curate.synthesis", description="Run synthesis on a snapshot and write its outputs.")
    ap.add_argument("--config", default="configs/banking77.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--snapshot", default=None, help="snapshot folder or id (default: the config's latest)")
    ap.add_argument("--rows", default=None, help="a stage's rows.parquet (train and eval rows) instead of a snapshot")
    ap.add_argument("--plan", default=None, help="Parquet/CSV with label, synth (default: the smallest classes)")
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--synthesis", default="{}", help="JSON of SynthesisConfig fields")
    ap.add_argument("--out", required=True, help="folder for synthetic.parquet, rejects.parquet, totals.json")
    args = ap.parse_args(argv)
    config = load_config(args.config, args.overrides)
    if args.rows:
        rows = pl.read_parquet(args.rows)
        train, ev = rows.filter(pl.col("split") == "train"), rows.filter(pl.col("split") == "eval")
    else:
        train, ev, _ = load_frames(config, args.snapshot)
    if args.plan:
        plan = pl.read_parquet(args.plan) if args.plan.endswith(".parquet") else pl.read_csv(args.plan)
    else:
        plan = smallest_classes_plan(train, args.classes, args.per_class)
    syn = SynthesisConfig.model_validate({**synthesis_settings(config).model_dump(), **json.loads(args.synthesis)})
    rows, rejects, totals = synthesize(plan, train, ev, config, synthesis=syn)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_table(rows, out / "synthetic.parquet")
    write_table(rejects, out / "rejects.parquet")
    write_json(totals, out / "totals.json")
    print(json.dumps({k: totals[k] for k in ("requested", "generated", "kept", "rejected", "label_agreement", "by_reason")}, sort_keys=True))
    sys.stdout.flush()
    from curate.engine import exit_now

    exit_now(0)  # the outputs are complete: leave without waiting for the engine's shutdown


if __name__ == "__main__":
    main()
