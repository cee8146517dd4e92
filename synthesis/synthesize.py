"""Synthesis: make the rows a balance plan says are missing, with a local vLLM model.

    kept, dropped, counts, totals = synthesize_stage(rows, plan, config)     # the stage (flows/tasks.py)
    rows, rejects, totals = synthesize(plan, train, eval, config)            # builds the engine

The flow runs the stage in a child process (`python -m flows.child synthesize`: vLLM's
engine needs a spawned process under a `__main__` guard, and gives its memory back when
the child ends). The prompts come from synthesis/requests.py, the engine and parsing
from synthesis/generate.py, the templates from templates/ (synthesis/templates.py).

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
4. clean     filters.clean.clean, exactly as for real rows (normalize, PII, length,
             repetition, blocklist, label/output validity).
5. dedupe    filters.dedupe.dedupe over real train + eval + synthetic rows kept so far +
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

import hashlib
import json
import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Protocol, Sequence

import polars as pl

from core.config import Config
from core.engine_pool import engine_count, make_engine
from core.ingest import ingest
from core.model import DEFAULT_MODEL_DIR
from core.progress import Progress
from core.schema import ROW_COLUMNS, ROW_SCHEMA, AccountingError, StageCounts, empty_dropped
from core.snapshot import resolve_snapshot
from core.synthesis_config import SynthesisConfig
from filters.clean import clean
from filters.dedupe import dedupe
from synthesis.generate import Generator, VLLMGenerator, parse_output
from synthesis.requests import LabelCheck, render_generation_requests, rows_by_class, steer_shots
from synthesis.templates import PromptTemplate, check_template, find_template, load_template

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
    "checker": pl.String(),           # who labelled it: "template:<name>" (the base model) or the checker's name
    "check_confidence": pl.Float64(), # the checker's probability of its label (null: a template check)
    "iteration": pl.Int64(),          # the iterate round that asked for it (null: the curation run's synthesis)
    "raw": pl.String(),               # the model's raw text
}
SYNTH_SCHEMA = {**ROW_SCHEMA, **PROVENANCE_SCHEMA}
REJECT_SCHEMA = {**SYNTH_SCHEMA, "stage": pl.String(), "reason": pl.String(), "detail": pl.String(), "duplicate_of": pl.String()}

# Reasons of the label check and the budget (stable: they become metrics); generation's are in synthesis/generate.py
LABEL_DISAGREEMENT, LABEL_CHECK_UNPARSEABLE, SURPLUS = "label_disagreement", "label_check_unparseable", "surplus"
LOW_CHECK_CONFIDENCE = "low_check_confidence"


class Checker(Protocol):
    """A label check other than the template's: labels texts blind (no intended class shown).

    `name` goes to each row's `checker` column; `label` returns (label or None, probability of it) per text.
    The iterate loop's is the tuned adapter itself (trainers/checker.py)."""

    name: str

    def label(self, texts: Sequence[str]) -> list[tuple[str | None, float | None]]: ...


def synthetic_row_id(template_hash: str, seed: int, sample: int, intended_label: str, text: str) -> str:
    """row_id = hash of ("synthetic", template hash, seed, intended label, text) (+ sample index when n > 1)."""
    parts = ["synthetic", template_hash, str(seed), intended_label, text] + ([str(sample)] if sample else [])
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def model_name(config: Config) -> str:
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


def focus_texts(plan: pl.DataFrame, eval: pl.DataFrame) -> dict[str, list[str]]:  # noqa: A002
    """The texts of each class's focus rows (the plan's `focus`: eval row ids, least sure first)."""
    text = dict(zip(eval["row_id"].to_list(), eval["input"].to_list()))
    return {r["label"]: [text[i] for i in r["focus"] if i in text]
            for r in plan.select("label", "focus").iter_rows(named=True) if r["focus"]}


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
    checker: Checker | None = None,
    min_check_confidence: float = 0.0,
    iteration: int | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Make the plan's missing rows. Returns (synthetic rows, rejects, totals).

    Input columns: plan `label`, `synth` (rows to make), optionally `focus` (per class, eval row ids whose nearest
    training rows of the class are shown first as few-shot examples: steer_shots); train and eval in the row schema
    (train needs row_id, input, output, label; eval row_id, input).
    Output: synthetic rows in SYNTH_SCHEMA (row schema + provenance, synthetic=true,
    split "train"); rejects in REJECT_SCHEMA (+ stage, reason, detail, duplicate_of);
    totals for the manifest (per class, per stage and reason, label agreement).

    Templates are linted and checked against the frames before the model starts (a bad
    template raises TemplateProblemError and nothing runs). `llm` is a `vllm.LLM` (made
    from the config when neither it nor `generator` is given); `generator` is any object
    with `generate(requests) -> [[Generation]]` (tests use stand-ins). A `checker` replaces the
    label-check template (rows it labels otherwise, or less surely than `min_check_confidence`,
    are rejected); `iteration` is recorded on every row (the iterate round).
    """
    started = time.perf_counter()
    syn = synthesis_settings(config, synthesis)
    _check_inputs(plan, train, eval)
    labels = config.label_set(root) or sorted(set(train["label"].to_list()))
    gen_tpl, chk_tpl = resolve_templates(config, syn)
    if checker is not None:
        chk_tpl = None  # the checker labels instead
    check_template(gen_tpl, config=config, columns=train.columns, job="generate")
    if chk_tpl is not None:
        check_template(chk_tpl, config=config, columns=train.columns, job="label_check")

    wanted = {r["label"]: int(r["synth"]) for r in plan.select("label", "synth").iter_rows(named=True) if (r["synth"] or 0) > 0}
    by_class = rows_by_class(train)
    prefer = steer_shots(by_class, focus_texts(plan, eval), gen_tpl.header.few_shot) if "focus" in plan.columns else None
    skipped = {}
    for label in sorted(wanted):
        if not gen_tpl.header.serves(label):
            skipped[label] = "template_does_not_serve_class"
        elif config.task.kind == "generation" and not by_class.get(label):
            skipped[label] = "no_real_rows"  # nothing to take the target output from
    planned = dict(wanted)
    for label in skipped:
        wanted.pop(label)

    with Progress("synthesis", total=sum(wanted.values()), unit="rows") as progress:
        progress.update(0, step="engine start" if generator is None and wanted else None)
        engine_seconds = 0.0
        if generator is None and wanted:
            if llm is None:
                t0 = time.perf_counter()
                llm = make_engine(config)  # one engine, or runner.engines of them on Ray (core/engine_pool.py)
                engine_seconds = time.perf_counter() - t0
            generator = VLLMGenerator(llm, batch_size=syn.batch_size)

        model = model_name(config)
        sampling_json = json.dumps(gen_tpl.header.sampling.model_dump(), sort_keys=True)
        check = LabelCheck(chk_tpl, train, config=config, labels=labels, seed=syn.seed) if chk_tpl is not None else None
        checker_name = checker.name if checker is not None else f"template:{chk_tpl.name}" if chk_tpl is not None else None
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
            progress.update(sum(kept_n.values()), round=attempt, step="generate")
            counts = {}
            for label, d in short.items():
                yield_ = kept_n[label] / generated[label] if generated[label] else None
                factor = syn.oversample if not yield_ else min(max(syn.oversample, syn.oversample / yield_), syn.max_oversample)
                if yield_ == 0.0:
                    factor = syn.max_oversample
                counts[label] = math.ceil(d * factor / gen_tpl.header.sampling.n)
            pending = render_generation_requests(gen_tpl, counts, by_class, config=config, labels=labels, seed=syn.seed,
                                                 attempt=attempt, prefer=prefer)
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
                        "check_template_hash": chk_tpl.hash if chk_tpl else None, "checker": checker_name,
                        "check_confidence": None, "iteration": iteration, "raw": g.text,
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
            progress.update(sum(kept_n.values()), generated=sum(generated.values()), step="label check")
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
            elif checker is not None and survivors:
                t0 = time.perf_counter()
                verdicts = checker.label([r["input"] for r in survivors])
                check_seconds += time.perf_counter() - t0
                nxt = []
                for r, (said, conf) in zip(survivors, verdicts, strict=True):
                    r["check_label"], r["check_confidence"] = said, conf
                    checked[r["label"]] += 1
                    if said is None:
                        rejects.append(_reject(r, "label_check", LABEL_CHECK_UNPARSEABLE, f"{checker.name} gave no label"))
                    elif said != r["label"]:
                        rejects.append(_reject(r, "label_check", LABEL_DISAGREEMENT, f"{checker.name} says {said!r}"))
                    else:
                        agree[r["label"]] += 1
                        if conf is not None and conf < min_check_confidence:
                            rejects.append(_reject(r, "label_check", LOW_CHECK_CONFIDENCE,
                                                   f"{checker.name}: p={conf:.3f} < {min_check_confidence}"))
                        else:
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
            progress.update(sum(kept_n.values()), agreement=round(sum(agree.values()) / max(sum(checked.values()), 1), 3))
        progress.update(sum(kept_n.values()), step=None)

    rows_df = _frame(kept, SYNTH_SCHEMA)
    rej_df = _frame(rejects, REJECT_SCHEMA)
    total_generated = sum(generated.values())
    if rows_df.height + rej_df.height != total_generated:
        raise AccountingError(f"synthesis: generated {total_generated} != kept {rows_df.height} + rejected {rej_df.height}")
    totals = summarize(planned, generated, kept_n, rej_df, agree, checked, skipped)
    totals |= {
        "template": {"name": gen_tpl.name, "hash": gen_tpl.hash, "version": gen_tpl.header.version},
        "label_check_template": {"name": chk_tpl.name, "hash": chk_tpl.hash} if chk_tpl else None,
        "checker": checker_name,
        "iteration": iteration,
        "model": model,
        "seed": syn.seed,
        "engines": engine_count(llm),  # runner.engines on Ray (core/engine_pool.py)
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


def load_frames(config: Config, snapshot: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """(train, eval, where): rows of a snapshot (default: the config's latest), else the ingested sample."""
    try:
        folder = resolve_snapshot(snapshot or config.name, config.output.snapshots)
    except FileNotFoundError:
        if snapshot is not None:
            raise
        rows, _, _ = ingest(config)
        return rows.filter(pl.col("split") == "train"), rows.filter(pl.col("split") == "eval"), "ingested sample (no snapshot yet)"
    return pl.read_parquet(Path(folder) / "train.parquet", glob=False), pl.read_parquet(Path(folder) / "eval.parquet", glob=False), str(folder)


def smallest_classes_plan(train: pl.DataFrame, classes: int, per_class: int) -> pl.DataFrame:
    """A stand-in plan: the `classes` smallest classes get `per_class` synthetic rows each."""
    counts = train.group_by("label").agg(real=pl.len()).sort(["real", "label"]).head(classes)
    return counts.with_columns(synth=pl.lit(per_class, dtype=pl.Int64))


def synthesis_requested(plan: pl.DataFrame, config: Config) -> bool:
    """Whether the stage will generate (synthesis on and a budget to fill): then it needs the model."""
    return config.synthesis.enabled and int(plan["synth"].sum()) > 0


def synthesize_stage(rows: pl.DataFrame, plan: pl.DataFrame, config: Config, *, llm=None, generator: Generator | None = None,
                     checker: Checker | None = None, min_check_confidence: float = 0.0, iteration: int | None = None,
                     ) -> tuple[pl.DataFrame, pl.DataFrame, StageCounts, dict]:
    """The synthesis stage: the balance stage's rows plus the plan's synthetic rows. Returns (kept, dropped, counts, totals).

    Rows in = the real rows + every generation; kept = real rows + synthetic rows that passed;
    each other generation is a filtered row with its stage (`synthesize.<pass>`) and reason.
    The iterate loop runs it on a round's snapshot with the tuned adapter as `checker`.
    With synthesis off or nothing to make, no model starts and the rows pass unchanged.
    """
    wanted = int(plan["synth"].sum())
    if not synthesis_requested(plan, config):
        synthetic = pl.DataFrame(schema=ROW_SCHEMA)
        rejects = empty_dropped()
        totals = {"enabled": config.synthesis.enabled, "requested": wanted, "generated": 0, "kept": 0, "rejected": 0}
    else:
        synthetic, raw_rejects, totals = synthesize(plan, rows.filter(pl.col("split") == "train"),
                                                     rows.filter(pl.col("split") == "eval"), config, llm=llm, generator=generator,
                                                     checker=checker, min_check_confidence=min_check_confidence, iteration=iteration)
        rejects = raw_rejects.with_columns(
            stage=pl.concat_str([pl.lit("synthesize."), pl.col("stage")]),
            cluster=pl.lit(None, dtype=pl.String),
        )
    kept = pl.concat([rows, synthetic], how="diagonal_relaxed")
    generated = synthetic.height + rejects.height
    by_split = {
        split: {
            "rows_in": rows.filter(pl.col("split") == split).height + (generated if split == "train" else 0),
            "kept": kept.filter(pl.col("split") == split).height,
            "filtered": rejects.height if split == "train" else 0,
            "quarantined": 0,
        }
        for split in sorted(set(rows["split"].to_list()) | {"train"})
    }
    counts = StageCounts(
        stage="synthesize",
        rows_in=rows.height + generated,
        kept=kept.height,
        filtered=dict(rejects.group_by("reason").len().iter_rows()) if rejects.height else {},
        by_split=by_split,
    ).check()
    return kept, rejects, counts, totals
