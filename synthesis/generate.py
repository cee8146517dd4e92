"""Generation for synthesis: requests to a local vLLM engine (or any stand-in), and parsing its output.

    gen = VLLMGenerator(make_llm(config), batch_size=256)
    outputs = gen.generate([Request(messages, sampling, parse_spec)])       # [[Generation], ...]
    value, reason, detail = parse_output(outputs[0][0], parse_spec)

Every request carries its own seed (`derive_seed`: stable across processes and versions)
and its structured-output constraint (JSON schema, regex or choice, vLLM guided
decoding) from the template's `parse`. Unparseable output is a reason, never an
exception: the stage keeps it as a counted reject. vllm is imported inside the
functions: this module imports fast for the data stages' tests.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from core.engine import release_free_memory
from core.engine_pool import engine_limits
from synthesis.templates import ParseSpec

# Reasons (stable: they become metrics)
TRUNCATED, EMPTY, UNPARSEABLE = "truncated", "empty_generation", "unparseable"
PROMPT_TOO_LONG = "prompt_too_long"  # the rendered prompt does not fit the model's context: never sent


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
    return engine_limits(llm).max_num_batched_tokens


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
    after each call (core.engine.release_free_memory), with the workers' resident
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
        window = engine_limits(self.llm).max_model_len
        return None if window is None else window - 1

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
            # Without this the CPU worker's heap grows faster (core.engine.WorkerMemory).
            if self.release_memory:
                started = time.perf_counter()
                workers = release_free_memory(self.llm) or []
                self.release_seconds += time.perf_counter() - started
                self.worker_rss_mb.append(sum(w["rss_mb"] for w in workers) or None)
        return out


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


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any parts (hashlib: stable across processes and versions)."""
    blob = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF
