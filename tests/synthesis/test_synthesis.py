"""Synthesis: parsing, reject reasons, provenance and budgets with a stand-in model; then one real vLLM run."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import polars as pl
import pytest

from core.config import Config, load_config
from core.devices import SMALL_MACHINE_CPUS
from core.engine import make_llm, release_free_memory
from core.schema import ROW_COLUMNS
from core.synthesis_config import SynthesisConfig
from synthesis.generate import PROMPT_TOO_LONG, Generation, Request, VLLMGenerator, derive_seed, pack_by_tokens, parse_output
from synthesis.nearest import NearestRows
from synthesis.preview import try_template
from synthesis.requests import render_generation_requests, rows_by_class
from synthesis.synthesize import PROVENANCE_SCHEMA, load_frames, smallest_classes_plan, synthesize, synthetic_row_id
from synthesis.templates import ParseSpec, TemplateProblemError, load_template

# ----------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------
JSON_SPEC = ParseSpec.model_validate({"kind": "json", "field": "text", "schema": {"type": "object", "properties": {"text": {"type": "string"}}}})
REGEX_SPEC = ParseSpec(kind="regex", pattern=r"(?P<text>[A-Z][^\n]{3,})")
CHOICE_SPEC = ParseSpec(kind="choice", choices="labels")


@pytest.mark.parametrize(
    "spec,text,finish,value,reason",
    [
        (JSON_SPEC, '{"text": " where is my card? "}', "stop", "where is my card?", None),
        (JSON_SPEC, '{"text": "where is my', "length", None, "truncated"),
        (JSON_SPEC, '{"text": "where"} trailing', "stop", None, "unparseable"),
        (JSON_SPEC, '{"message": "where"}', "stop", None, "unparseable"),
        (JSON_SPEC, '{"text": 3}', "stop", None, "unparseable"),
        (JSON_SPEC, '{"text": "  "}', "stop", None, "empty_generation"),
        (JSON_SPEC, "   ", "stop", None, "empty_generation"),
        (REGEX_SPEC, "Is it on Steam?\n", "stop", "Is it on Steam?", None),
        (REGEX_SPEC, "is it on Steam?", "stop", None, "unparseable"),
        (CHOICE_SPEC, "card_arrival", "stop", "card_arrival", None),
        (CHOICE_SPEC, "card_arriv", "stop", None, "unparseable"),
        (JSON_SPEC, "", "prompt_too_long", None, "prompt_too_long"),
    ],
)
def test_parse_output_reasons(spec, text, finish, value, reason):
    got, why, detail = parse_output(Generation(text, finish, 5), spec, choices=["card_arrival", "lost_card"])
    assert (got, why) == (value, reason)
    assert (detail is None) == (reason is None)


def test_pack_by_tokens_respects_budget_and_batch():
    assert pack_by_tokens([100] * 10, budget=350, max_items=100) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert pack_by_tokens([100] * 5, budget=None, max_items=2) == [(0, 2), (2, 4), (4, 5)]
    assert pack_by_tokens([500, 10], budget=100, max_items=8) == [(0, 1), (1, 2)]  # an oversized prompt alone


class StandInLLM:
    """A stand-in for vllm.LLM: its context window, a tokenizer (a token per word) and generate().

    `answer(call)` gives the text every prompt of the call-th generate() call gets (1-based);
    `calls` keeps the prompt lengths each call sent.
    """

    def __init__(self, max_model_len: int, answer):
        from types import SimpleNamespace

        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=max_model_len))
        self.answer = answer
        self.calls: list[list[int]] = []
        self.rpcs: list[str] = []  # collective_rpc methods run "on the workers"

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.rpcs.append(method)
        return [{"pid": 0, "trimmed": True, "rss_mb": 100.0}]

    def get_tokenizer(self):
        from types import SimpleNamespace

        return SimpleNamespace(apply_chat_template=lambda messages, tokenize, add_generation_prompt: messages[-1]["content"],
                               encode=lambda text, add_special_tokens: list(range(len(text.split()))))

    def generate(self, prompts, params, use_tqdm):
        from types import SimpleNamespace

        self.calls.append([len(p["prompt_token_ids"]) for p in prompts])
        out = SimpleNamespace(text=self.answer(len(self.calls)), finish_reason="stop", token_ids=[1, 2])
        return [SimpleNamespace(outputs=[out]) for _ in prompts]


def test_the_engine_gives_its_freed_memory_back_after_every_generate_call():
    """glibc keeps what the CPU worker frees in its heap; the generator has it handed back (core.engine.WorkerMemory)."""

    reqs = [Request([{"role": "user", "content": "w " * n}], {"temperature": 0.0, "max_tokens": 4, "seed": 1}, JSON_SPEC, None)
            for n in (3, 3, 3, 3, 3)]
    engine = StandInLLM(64, lambda call: '{"text": "ok"}')
    gen = VLLMGenerator(engine, batch_size=2, token_budget=None)
    gen.generate(reqs)
    assert len(engine.calls) == 3
    assert engine.rpcs == ["curate_malloc_trim"] * 3  # once after each generate() call
    assert gen.worker_rss_mb == [100.0] * 3
    baseline = StandInLLM(64, lambda call: '{"text": "ok"}')
    VLLMGenerator(baseline, batch_size=2, token_budget=None, release_memory=False).generate(reqs)
    assert len(baseline.calls) == 3 and baseline.rpcs == []
    # An engine without the method (not built by build_llm) is left alone.
    assert release_free_memory(object()) is None


def test_a_failed_release_is_logged_once_and_the_run_goes_on(caplog, monkeypatch):
    import core.engine

    class NoMethod:
        def collective_rpc(self, method, timeout=None):
            raise AttributeError(f"'Worker' object has no attribute {method!r}")

    monkeypatch.setattr(core.engine, "_release_failed_logged", False)
    with caplog.at_level("WARNING", logger="core.engine"):
        assert release_free_memory(NoMethod()) is None
        assert release_free_memory(NoMethod()) is None
    warned = [r.getMessage() for r in caplog.records if r.name == "core.engine"]
    assert len(warned) == 1 and "did not release" in warned[0] and "AttributeError" in warned[0]


def test_a_prompt_longer_than_the_context_is_a_reject_and_the_batch_goes_on():
    """The engine would refuse the whole generate() call; the generator answers that prompt itself."""

    sampling = {"temperature": 0.0, "max_tokens": 4, "seed": 1}
    reqs = [Request([{"role": "user", "content": " ".join(["w"] * n)}], sampling, JSON_SPEC, None) for n in (3, 20, 7)]
    engine = StandInLLM(8, lambda call: '{"text": "ok"}')
    gens = VLLMGenerator(engine, token_budget=None).generate(reqs)
    assert sum(engine.calls, []) == [3, 7]  # the 20-token prompt never reached the engine
    assert [g[0].finish_reason for g in gens] == ["stop", PROMPT_TOO_LONG, "stop"]
    assert parse_output(gens[1][0], JSON_SPEC)[1] == PROMPT_TOO_LONG


def test_templates_try_checks_each_parsed_text_with_the_label_check(viggo):
    """`curate templates try` on a stand-in engine: the generation, then the label check on what parsed."""

    utterance = "You said you liked the game a lot, is that right?"
    engine = StandInLLM(4096, lambda call: utterance if call == 1 else "inform")  # then every check says "inform"
    config, train, _ = viggo
    results, gen = try_template(load_template("viggo_utterance_for_mr"), config, train, engine, n=3)
    assert [len(c) for c in engine.calls] == [3, 3]  # three generations, then three label checks in one batch
    assert [r["parsed"] for r in results] == [utterance] * 3
    assert sorted(r["label_check"] for r in results) == sorted(
        "agrees" if r["class"] == "inform" else "disagrees: inform" for r in results)


def test_seeds_and_ids_are_stable():
    assert derive_seed(0, "a", 1) == derive_seed(0, "a", 1) != derive_seed(0, "a", 2)
    assert 0 <= derive_seed("x") < 2**31
    rid = synthetic_row_id("h" * 16, 7, 0, "a", "text")
    assert rid == synthetic_row_id("h" * 16, 7, 0, "a", "text") and len(rid) == 16
    assert rid != synthetic_row_id("h" * 16, 7, 0, "b", "text")


# ----------------------------------------------------------------------------------------
# The stage with a stand-in model
# ----------------------------------------------------------------------------------------
GEN = """{#---
name: t_new
job: generate
task: t
few_shot: 2
sampling: {temperature: 0.9, top_p: 0.9, max_tokens: 32}
parse: {kind: json, field: text, schema: {type: object, properties: {text: {type: string}}, required: [text]}}
variables: [label, examples]
---#}
Intent: {{ label }}
{% for ex in examples %}- {{ ex.input }}
{% endfor %}Write one."""

CHECK = """{#---
name: t_check
job: label_check
task: t
few_shot: 3
sampling: {temperature: 0.0, max_tokens: 8}
parse: {kind: choice, choices: labels}
variables: [labels, examples, text]
---#}
Labels: {{ labels | join(", ") }}
{% for ex in examples %}Message: {{ ex.input }}
Label: {{ ex.label }}
{% endfor %}Message: {{ text }}
Label:"""

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango".split()
TRAIN = {
    "a": ["my card has not arrived yet", "when will the new card come", "card delivery is taking ages"],
    "b": ["how do i top up with cash", "top up by bank transfer failed"],
    "c": ["please close my account today"],
}
EVAL_TEXT = "the exchange rate on my last transfer looks wrong to me"


def make_config(tmp_path: Path) -> Config:
    return Config.model_validate({
        "name": "t",
        "task": {"kind": "classification", "input_field": "text", "output_field": "label", "labels": ["a", "b", "c"]},
        "data": {"train": [{"path": "unused.jsonl"}]},
        "clean": {"min_chars": 8, "min_words": 2, "blocklist": {"enabled": False}},
        "output": {"snapshots": str(tmp_path / "snap"), "runs": str(tmp_path / "runs")},
        "allow_outside_paths": True,
    })


def frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    def rows(split, items):
        return pl.DataFrame(
            [{"row_id": f"{split}{i}", "split": split, "source": "s", "line": i, "input": t, "output": l, "label": l,
              "pii": [], "synthetic": False} for i, (t, l) in enumerate(items)],
        )
    train = rows("train", [(t, l) for l, ts in TRAIN.items() for t in ts])
    ev = rows("eval", [(EVAL_TEXT, "b")])
    return train, ev


class StandIn:
    """Scripted outputs per class, then fresh unique messages; the label check answers from a lookup."""

    def __init__(self, scripts: dict[str, list[tuple[str, str]]], disagree: set[str] = frozenset()):
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.disagree = set(disagree)
        self.made: dict[str, str] = {}  # text -> class it was generated for
        self.calls = 0
        self.requests = []

    def _fresh(self, label: str) -> str:
        rng = random.Random(len(self.made) * 7919 + ord(label))
        return f"{label} " + " ".join(rng.sample(WORDS, 8))

    def generate(self, requests):
        self.calls += 1
        self.requests += requests
        out = []
        for r in requests:
            prompt = r.messages[0]["content"]
            if r.parse.kind == "choice":
                text = prompt.rsplit("Message: ", 1)[1].rsplit("\nLabel:", 1)[0]
                truth = self.made.get(text, "a")
                said = next(l for l in r.choices if l != truth) if text in self.disagree else truth
                out.append([Generation(said, "stop", 1)])
                continue
            label = re.search(r"Intent: (\w+)", prompt).group(1)
            script = self.scripts.get(label) or []
            raw, finish = script.pop(0) if script else (json.dumps({"text": self._fresh(label)}), "stop")
            try:
                self.made[json.loads(raw)["text"].strip()] = label
            except (ValueError, KeyError, TypeError):
                pass
            out.append([Generation(raw, finish, 9)])
        return out


def J(text: str) -> str:
    return json.dumps({"text": text})


@pytest.fixture
def setup(tmp_path):
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "t_new.jinja").write_text(GEN)
    (tdir / "t_check.jinja").write_text(CHECK)
    syn = SynthesisConfig(enabled=True, templates_dir=str(tdir), oversample=1.5, max_attempts=4, seed=3)
    train, ev = frames()
    plan = pl.DataFrame({"label": ["a", "b", "c"], "real": [3, 2, 1], "synth": [3, 2, 0]})
    return make_config(tmp_path), syn, train, ev, plan, tdir


SCRIPTS = {
    "a": [
        (J("i would like to know where my new card is right now"), "stop"),   # kept
        ('{"text": "i would like', "length"),                                   # truncated
        ("not json at all", "stop"),                                             # unparseable
        (J("   "), "stop"),                                                      # empty_generation
        (J("my card has not arrived yet"), "stop"),                              # exact duplicate of a real row
        (J("The exchange rate on my last transfer looks wrong to me!"), "stop"),  # eval contamination (after clean)
        (J("card?"), "stop"),                                                    # too_short (clean)
        (J("this one the checker will call something else entirely"), "stop"),  # label_disagreement
        (J("i would like to know where my new card is right now"), "stop"),   # duplicate of an earlier synthetic row
    ],
}


def test_every_generation_is_a_row_or_a_reason(setup):
    config, syn, train, ev, plan, tdir = setup
    model = StandIn(SCRIPTS, disagree={"this one the checker will call something else entirely"})
    rows, rejects, totals = synthesize(plan, train, ev, config, generator=model, synthesis=syn)

    # budgets met exactly; class c (synth 0) untouched
    assert rows.group_by("label").len().sort("label").rows() == [("a", 3), ("b", 2)]
    assert totals["by_class"]["a"]["kept"] == 3 and totals["by_class"]["b"]["target"] == 2 and "c" not in totals["by_class"]
    # accounting: every generation ends as exactly one row or one reject
    assert totals["generated"] == rows.height + rejects.height == len([r for r in model.requests if r.parse.kind == "json"])
    stage_of = {r: s for s, r in zip(rejects["stage"], rejects["reason"])}
    assert stage_of == {
        "truncated": "generate", "unparseable": "generate", "empty_generation": "generate",
        "too_short": "clean", "exact_duplicate": "dedupe", "eval_contamination": "dedupe",
        "label_disagreement": "label_check", **({"surplus": "budget"} if "surplus" in stage_of else {}),
    }
    assert rejects["reason"].value_counts().filter(pl.col("reason") == "exact_duplicate")["count"][0] == 2
    dup_of = rejects.filter(pl.col("reason") == "eval_contamination")["duplicate_of"][0]
    assert dup_of == "eval0"
    assert rejects.filter(pl.col("reason") == "unparseable")["raw"][0] == "not json at all"
    assert totals["by_reason"]["generate"] == {"empty_generation": 1, "truncated": 1, "unparseable": 1}
    # nothing kept (near-)duplicates a real or eval row
    real = {t.lower() for t in train["input"]} | {EVAL_TEXT}
    assert not any(t.lower().rstrip("!") in real for t in rows["input"])
    # label check: agreement per class
    a = totals["by_class"]["a"]
    assert a["label_checked"] >= 4 and 0 < a["label_agreement"] < 1
    assert totals["by_class"]["b"]["label_agreement"] == 1.0


def test_provenance_on_every_synthetic_row(setup):
    config, syn, train, ev, plan, tdir = setup
    rows, rejects, totals = synthesize(plan, train, ev, config, generator=StandIn(SCRIPTS), synthesis=syn)
    tpl = load_template(tdir / "t_new.jinja")
    assert set(ROW_COLUMNS) | set(PROVENANCE_SCHEMA) == set(rows.columns) and set(rejects.columns) >= set(rows.columns)
    assert rows["synthetic"].all() and (rows["split"] == "train").all()
    assert set(rows["template"]) == {"t_new"} and set(rows["template_hash"]) == {tpl.hash}
    by_class = {l: set(train.filter(pl.col("label") == l)["row_id"]) for l in TRAIN}
    for r in rows.iter_rows(named=True):
        assert r["intended_label"] == r["label"] == r["check_label"] == r["output"]
        assert set(r["few_shot_ids"]) <= by_class[r["label"]] and len(r["few_shot_ids"]) == min(2, len(by_class[r["label"]]))
        assert json.loads(r["sampling"]) == {"temperature": 0.9, "top_p": 0.9, "max_tokens": 32, "n": 1, "repetition_penalty": 1.0}
        assert r["attempt"] >= 1 and r["source"] == "synthetic:t_new"
        raw_text = json.loads(r["raw"])["text"].strip()
        assert r["row_id"] == synthetic_row_id(tpl.hash, r["seed"], r["sample"], r["label"], raw_text)
    assert len(set(rows["row_id"])) == rows.height
    assert totals["template"] == {"name": "t_new", "hash": tpl.hash, "version": 1}
    assert rejects["stage"].null_count() == 0 and rejects["reason"].null_count() == 0


def test_a_plan_focus_steers_the_few_shot_rows_to_the_real_rows_nearest_its_eval_rows(setup):
    """The iterate loop's plan names, per class, the eval rows the tuned model was least sure of: the generator is
    shown the class's real rows nearest to them (never the eval text itself); without a focus the draw is the
    plain seeded one, unchanged."""
    config, syn, train, ev, plan, tdir = setup
    ev = pl.concat([ev, ev.with_columns(row_id=pl.lit("eval1"), input=pl.lit("the new card still has not arrived"),
                                        output=pl.lit("a"), label=pl.lit("a"))])
    steered = plan.with_columns(focus=pl.Series([["eval1"], [], []], dtype=pl.List(pl.String)))
    model = StandIn({})
    rows, _, _ = synthesize(steered, train, ev, config, generator=model, synthesis=syn)
    nearest = {r["row_id"] for r in NearestRows(rows_by_class(train)["a"]).nearest(["the new card still has not arrived"], 2)[0]}
    assert nearest == {"train0", "train1"}  # "my card has not arrived yet", "when will the new card come"
    a = rows.filter(pl.col("label") == "a")
    assert a.height == 3 and all(set(ids) == nearest for ids in a["few_shot_ids"])
    prompts = [r.messages[0]["content"] for r in model.requests if r.parse.kind == "json"]
    assert not any("the new card still has not arrived" in p for p in prompts)
    # no focus column, or an empty focus: the same seeded draw
    plain, _, _ = synthesize(plan, train, ev, config, generator=StandIn({}), synthesis=syn)
    unfocused, _, _ = synthesize(plan.with_columns(focus=pl.Series([[], [], []], dtype=pl.List(pl.String))), train, ev,
                                 config, generator=StandIn({}), synthesis=syn)
    assert plain["few_shot_ids"].to_list() == unfocused["few_shot_ids"].to_list()
    assert any(set(ids) != nearest for ids in plain.filter(pl.col("label") == "a")["few_shot_ids"])  # steering made the difference


def test_seeded_runs_repeat_and_seeds_differ_per_request(setup):
    config, syn, train, ev, plan, tdir = setup
    m1, m2 = StandIn({}), StandIn({})
    r1, _, _ = synthesize(plan, train, ev, config, generator=m1, synthesis=syn)
    r2, _, _ = synthesize(plan, train, ev, config, generator=m2, synthesis=syn)
    assert r1["row_id"].to_list() == r2["row_id"].to_list()
    seeds = [r.sampling["seed"] for r in m1.requests if r.parse.kind == "json"]
    assert len(set(seeds)) == len(seeds)
    # the few-shot block is shared by a class's requests in a round: a common prompt prefix (prefix caching)
    a_prompts = [r.messages[0]["content"] for r in m1.requests if r.parse.kind == "json" and "Intent: a" in r.messages[0]["content"]]
    assert len(set(a_prompts)) == 1
    # the label check prompt never shows the intended class: identical up to the message
    checks = [r.messages[0]["content"].rsplit("Message: ", 1)[0] for r in m1.requests if r.parse.kind == "choice"]
    assert len(set(checks)) == 1


def test_attempts_run_out_before_the_budget(setup):
    config, syn, train, ev, plan, tdir = setup
    always_bad = StandIn({"a": [("nope", "stop")] * 1000, "b": [("nope", "stop")] * 1000})
    rows, rejects, totals = synthesize(plan, train, ev, config, generator=always_bad, synthesis=syn.model_copy(update={"max_attempts": 2}))
    assert rows.height == 0 and set(rejects["reason"]) == {"unparseable"}
    assert {r for r in rejects["attempt"]} == {1, 2}
    # round 1: ceil(3 * 1.5) + ceil(2 * 1.5); round 2 with zero yield: max_oversample
    assert totals["generated"] == 5 + 3 + 3 * 8 + 2 * 8


@pytest.mark.parametrize(
    "body,code",
    [
        ("Intent: {{ label }} {{ customer }}", "unknown_variable"),
        ("Intent: {{ label }}{% for ex in examples %}", "syntax_error"),
        ("Intent: {{ label }}{{ examples }}{{ cycler.__init__.__globals__ }}", "sandbox"),
    ],
)
def test_generation_refuses_to_start_with_a_bad_template(setup, body, code):
    config, syn, train, ev, plan, tdir = setup
    (tdir / "t_new.jinja").write_text(GEN.split("---#}")[0] + "---#}\n" + body)
    model = StandIn({})
    with pytest.raises(TemplateProblemError) as exc:
        synthesize(plan, train, ev, config, generator=model, synthesis=syn)
    assert code in {p.code for p in exc.value.problems}
    assert model.calls == 0


def test_nearest_check_shots_never_show_the_rows_a_text_was_written_from(setup):

    config, syn, train, ev, plan, tdir = setup
    (tdir / "t_check.jinja").write_text(CHECK.replace("few_shot: 3\n", "few_shot: 3\nshots: nearest\n"))
    model = StandIn(SCRIPTS)
    rows, rejects, _ = synthesize(plan, train, ev, config, generator=model, synthesis=syn)
    text_of = dict(zip(train["row_id"], train["input"]))
    checked = pl.concat([rows.select("input", "few_shot_ids"), rejects.filter(pl.col("stage").is_in(["label_check", "budget"])).select("input", "few_shot_ids")])
    made_from = {t: {text_of[i] for i in ids} for t, ids in checked.iter_rows()}
    checks = [r.messages[0]["content"] for r in model.requests if r.parse.kind == "choice"]
    assert len(checks) == checked.height > 0
    for prompt in checks:
        text = prompt.rsplit("Message: ", 1)[1].rsplit("\nLabel:", 1)[0]
        shown = re.findall(r"Message: (.*)\nLabel: ", prompt)
        assert len(shown) == 3 and not set(shown) & made_from[text], (text, shown)
    # without the exclusion, some text would have been shown a row it was written from
    plain = NearestRows(train.select("row_id", "input", "label").to_dicts()).nearest(list(made_from), 3)
    assert any({r["input"] for r in shots} & made_from[t] for t, shots in zip(made_from, plain))


def test_frames_checked_before_the_model_starts(setup):
    config, syn, train, ev, plan, tdir = setup
    model = StandIn({})
    with pytest.raises(ValueError, match="plan lacks columns"):
        synthesize(plan.drop("synth"), train, ev, config, generator=model, synthesis=syn)
    with pytest.raises(ValueError, match=r"train lacks columns \['output'\]"):
        synthesize(plan, train.rename({"output": "target"}), ev, config, generator=model, synthesis=syn)
    assert model.calls == 0


# ----------------------------------------------------------------------------------------
# The real engine: one vLLM CPU engine for this whole module
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def viggo():

    config = load_config("configs/viggo.yaml")
    train, ev, _ = load_frames(config)
    return config, train, ev


@pytest.fixture(scope="module")
def engine(viggo):

    llm = make_llm(viggo[0])
    yield llm
    del llm


@pytest.mark.slow
def test_real_engine_workers_give_freed_memory_back(engine):
    """build_llm adds core.engine.WorkerMemory to vLLM's worker: malloc_trim runs in the worker process."""
    import psutil


    workers = [p for p in psutil.Process().children(recursive=True) if "VLLM::Worker" in " ".join(p.cmdline())]
    ran = release_free_memory(engine)
    assert [r["pid"] for r in ran] == [w.pid for w in workers]  # in the worker's process, not this one
    assert all(isinstance(r["trimmed"], bool) for r in ran)
    # The worker holds the model and its KV cache: hundreds of MB at least, as psutil sees it too.
    assert all(r["rss_mb"] > 200 for r in ran)
    assert abs(ran[0]["rss_mb"] - workers[0].memory_info().rss / 2**20) < 0.25 * ran[0]["rss_mb"]


@pytest.mark.slow
def test_real_engine_end_to_end(engine, viggo):

    config, train, ev = viggo
    plan = smallest_classes_plan(train, 3, 2)
    syn = SynthesisConfig(enabled=True, oversample=1.5, max_attempts=2, seed=1)
    gen = VLLMGenerator(engine, batch_size=64)
    rows, rejects, totals = synthesize(plan, train, ev, config, generator=gen, synthesis=syn)

    assert totals["generated"] == rows.height + rejects.height > 0
    assert gen.tokens > 0 and gen.calls >= 2  # generation and label check
    known = {"truncated", "empty_generation", "unparseable", "too_short", "too_long", "too_few_words", "repetitive",
             "blocklisted", "invalid_output", "unknown_label", "exact_duplicate", "near_duplicate", "eval_contamination",
             "label_conflict", "label_disagreement", "label_check_unparseable", "surplus"}
    assert set(rejects["reason"]) <= known, set(rejects["reason"])
    # guided decoding: whatever finished (not cut by max_tokens) parsed
    assert rejects.filter((pl.col("stage") == "generate") & (pl.col("reason") == "unparseable")).height == 0
    for label, n in zip(plan["label"], plan["synth"]):
        assert totals["by_class"][label]["kept"] <= n
    # kept rows: the class's real MRs as output, provenance, no overlap with real or eval inputs
    real_mrs = set(train["output"])
    assert all(o in real_mrs for o in rows["output"])
    assert rows["synthetic"].all() and rows["model"].str.ends_with("SmolLM2-135M-Instruct").all()
    assert not set(rows["input"]) & (set(train["input"]) | set(ev["input"]))
    checked = sum(c["label_checked"] for c in totals["by_class"].values())
    assert checked == rows.height + rejects.filter(pl.col("stage").is_in(["label_check", "budget"])).height


@pytest.mark.slow
def test_real_engine_seeded_requests_repeat(engine, viggo):

    config, train, _ = viggo
    tpl = load_template("viggo_utterance_for_mr")
    pending = render_generation_requests(tpl, {"confirm": 3}, rows_by_class(train), config=config,
                                         labels=config.label_set(), seed=5, attempt=1)
    gen = VLLMGenerator(engine)

    def one_by_one():
        # Each request alone, from an empty prefix cache, as a fresh run's engine starts. In a
        # batch the layout is not fixed: the engine core (its own process) starts stepping as
        # soon as the first request reaches it, so which requests share a step depends on
        # timing, and the CPU kernels' batched sums then differ in the last bits, enough to
        # flip a sampled token (seen in CI). A cached prefix likewise sums attention in another
        # order than a full prefill.
        texts = []
        for p in pending:
            engine.reset_prefix_cache()
            texts.append(gen.generate([p.request])[0][0].text)
        return texts

    first, again = one_by_one(), one_by_one()
    # Per-request seeds: the same request gives the same sample, run after run.
    assert first == again
    assert len(set(first)) > 1


@pytest.mark.slow
def test_real_engine_templates_try(engine, viggo):

    config, train, _ = viggo
    results, gen = try_template(load_template("viggo_utterance_for_mr"), config, train, engine, n=3)
    assert len(results) == 3 and gen.calls >= 1
    for r in results:
        assert r["raw"] is not None and (r["parsed"] is None) == (r["reason"] is not None)
        if r["parsed"] is None:
            assert r["label_check"] == ""
        else:
            assert r["label_check"] == "agrees" or r["label_check"].startswith(("disagrees", "unparseable", "truncated"))


@pytest.mark.slow
def test_real_engine_computes_on_every_core_of_a_small_machine(engine):
    """vLLM keeps a core for its scheduler; `cpu_threads_bind: auto` gives a machine of <= 4 cores all to the model."""
    import os

    import psutil


    workers = [p for p in psutil.Process().children(recursive=True) if "VLLM::Worker" in " ".join(p.cmdline())]
    assert workers, "no engine worker process"
    cpus = sorted(os.sched_getaffinity(0))
    bound = [sorted(psutil.Process(t.id).cpu_affinity()) for t in workers[0].threads()]
    used = sorted({c for b in bound if len(b) == 1 for c in b})  # the OpenMP threads: one core each
    if len(cpus) <= SMALL_MACHINE_CPUS:
        assert used == cpus, (used, cpus)
    else:  # bigger machines: vLLM's own binding, a core left to the scheduler
        assert set(used) < set(cpus), (used, cpus)
