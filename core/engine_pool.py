"""Data-parallel generation on Ray: one vLLM engine per Ray actor, each call's prompts split over them.

    llm = make_engine(config)                        # a vllm.LLM, or a pool when the config asks for engines on Ray
    llm = build_engine(model_dir, config.model.engine, seed=0, parallel=DataParallel(engines=2), enable_lora=True)
    outputs = llm.generate(prompts, params)          # as vllm.LLM.generate: one output per prompt, in order

`build_engine` returns a pool in place of a `vllm.LLM` (core.engine.build_llm) when
`runner.kind: ray` asks for more than one engine (`runner.engines`), so synthesis and evaluation spread
their requests over the engines without knowing it: the pool answers the calls they make
of an engine (`generate`, `get_tokenizer`, its limits). Each call's prompts are cut into
`engines` contiguous parts, in order; each part goes to one actor, and the outputs are
joined in the prompts' order, so what is written (the synthetic rows, the predictions)
is what one engine writes for the same requests (tests/core/test_engine_pool.py).

Each actor builds its engine with vLLM's engine core in the actor's own process
(VLLM_ENABLE_V1_MULTIPROCESSING=0): nothing outlives an actor Ray stops, and a call's
requests all reach the scheduler before its first step. On a GPU cluster an actor
reserves `runner.engine_gpus` GPUs (default: `tensor_parallel_size` where CUDA is
there), so Ray puts one engine on each GPU. On CPUs, with `cpu_threads_bind: auto`, the
actors on one machine split its cores between them (engine i computes on the i-th of
`engines` equal slices), since OpenMP threads of several engines on the same cores spin
against each other. `gpu_memory_utilization` is each engine's own (of RAM on the CPU
build, weights included): N engines on one machine take N times it. Ray itself is
imported inside the functions: nothing imports it unless a pool is asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.config import Config, EngineConfig
from core.devices import cuda_available, engine_cpu_env, usable_cpus
from core.engine import build_llm, release_free_memory
from core.model import resolve_model


@dataclass(frozen=True)
class DataParallel:
    """How many engines a model stage spreads its requests over, and what Ray reserves for each."""

    engines: int = 1
    gpus: float | None = None  # per engine; None: tensor_parallel_size where CUDA is there, else 0
    cpus: float = 0.0  # per engine, Ray's logical CPUs (0: the stage's own task already holds the machine's)
    address: str | None = None  # a Ray cluster; None: RAY_ADDRESS, else a local Ray
    num_cpus: int | None = None  # CPUs of that local Ray (None: all)

    @classmethod
    def from_config(cls, config: Config) -> DataParallel | None:
        """The config's data parallelism: None unless `runner.kind: ray` asks for more than one engine."""
        r = config.runner
        if r.kind != "ray" or r.engines < 2:
            return None
        return cls(engines=r.engines, gpus=r.engine_gpus, cpus=r.engine_cpus, address=r.address, num_cpus=r.num_cpus)


@dataclass(frozen=True)
class Completion:
    """One sample of a request: what callers read of vLLM's CompletionOutput."""

    text: str
    finish_reason: str | None
    token_ids: list[int]
    logprobs: list[dict[int, Any] | None] | None = None  # per generated token, {token id: vLLM Logprob}, where asked for

    @classmethod
    def of(cls, c) -> Completion:
        """A vLLM CompletionOutput's fields, as plain picklable values (its log-probabilities as one dict per token)."""
        logprobs = None if c.logprobs is None else [None if step is None else dict(step) for step in c.logprobs]
        return cls(c.text, c.finish_reason, list(c.token_ids), logprobs)


@dataclass(frozen=True)
class RequestResult:
    """One request's samples, as vLLM's RequestOutput.outputs."""

    outputs: list[Completion]


@dataclass(frozen=True)
class EngineLimits:
    """What callers ask of an engine's configuration: its context window and a step's prefill budget."""

    max_model_len: int | None
    max_num_batched_tokens: int | None  # None unless chunked prefill is on: a step then prefills at most this many


def engine_limits(llm) -> EngineLimits:
    """The limits of a `vllm.LLM` or an EnginePool (None where a stand-in has no such setting)."""
    if isinstance(llm, EnginePool):
        return llm.limits
    engine = getattr(llm, "llm_engine", None)
    model = getattr(engine, "model_config", None)
    sched = getattr(getattr(engine, "vllm_config", None), "scheduler_config", None)
    chunked = sched is not None and getattr(sched, "enable_chunked_prefill", False)
    return EngineLimits(int(model.max_model_len) if model is not None else None,
                        int(sched.max_num_batched_tokens) if chunked else None)


def engine_count(llm) -> int:
    """How many engines answer for `llm`: a pool's actors, else one (reports record it)."""
    return len(llm.actors) if isinstance(llm, EnginePool) else 1


def split_evenly(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) of `parts` contiguous runs covering range(n), the first ones longer by one; empty runs left out."""
    size, extra = divmod(n, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + size + (i < extra)
        if stop > start:
            bounds.append((start, stop))
        start = stop
    return bounds


def core_slices(cpus: Sequence[int], engines: int) -> list[list[int]]:
    """The machine's cores cut into one contiguous slice per engine (engines beyond the cores share them in turn)."""
    cpus = sorted(cpus)
    if engines >= len(cpus):
        return [[cpus[i % len(cpus)]] for i in range(engines)]
    return [cpus[a:b] for a, b in split_evenly(len(cpus), engines)]


class _Engine:
    """A Ray actor's body: one vLLM engine, answering generate calls for its part of the prompts."""

    def __init__(self, model_dir: str, engine: dict, seed: int, environ: dict[str, str], extra: dict) -> None:
        os.environ.update(environ)  # before vLLM reads it: set variables win over the settings (core.engine)
        self.llm = build_llm(model_dir, EngineConfig.model_validate(engine), seed=seed, **extra)

    def limits(self) -> EngineLimits:
        return engine_limits(self.llm)

    def generate(self, prompts: list, params: Any, lora_request: Any = None) -> list[RequestResult]:
        outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=lora_request)
        release_free_memory(self.llm)  # the worker's freed heap pages back to the system, as in-process
        return [RequestResult([Completion.of(c) for c in o.outputs]) for o in outputs]


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster the stage runs on (`address`, else RAY_ADDRESS), or start a local one (of `num_cpus`)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    local = {} if address else {"include_dashboard": False, **({"num_cpus": num_cpus} if num_cpus else {})}
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, **local)


class EnginePool:
    """`engines` vLLM engines on Ray actors, driven like one `vllm.LLM` (generate, get_tokenizer, limits)."""

    def __init__(self, model_dir: str | Path, engine: EngineConfig, *, seed: int, parallel: DataParallel,
                 trust_remote_code: bool = False, **extra) -> None:
        import ray

        connect_ray(parallel.address, parallel.num_cpus)
        self.model_dir, self.trust_remote_code = str(Path(model_dir).resolve()), trust_remote_code
        gpus = parallel.gpus if parallel.gpus is not None else (engine.tensor_parallel_size if cuda_available() else 0)
        slices = core_slices(usable_cpus(), parallel.engines)
        actor = ray.remote(_Engine)
        self.actors = []
        for i in range(parallel.engines):
            environ = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CONFIGURE_LOGGING": "0"}
            if not gpus and engine.cpu_threads_bind == "auto":
                environ |= engine_cpu_env("auto", cpus=slices[i], environ={})  # engine i on the i-th slice of the cores
            self.actors.append(actor.options(num_cpus=parallel.cpus, num_gpus=gpus).remote(
                self.model_dir, engine.model_dump(mode="json"), seed, environ,
                {"trust_remote_code": trust_remote_code, **extra}))
        self.limits: EngineLimits = ray.get([a.limits.remote() for a in self.actors])[0]  # every engine started
        self._tokenizer = None

    def get_tokenizer(self):
        """The model's tokenizer, loaded here (the same files each engine loaded)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    def generate(self, prompts: Sequence, params: Any, *, use_tqdm: bool = False, lora_request: Any = None) -> list[RequestResult]:
        """One result per prompt, in order: contiguous parts of the prompts (and their params) on the engines at once."""
        import ray

        del use_tqdm  # the actors never draw a bar
        prompts = list(prompts)
        per_prompt = isinstance(params, (list, tuple))
        calls = [self.actors[i].generate.remote(prompts[a:b], list(params[a:b]) if per_prompt else params, lora_request)
                 for i, (a, b) in enumerate(split_evenly(len(prompts), len(self.actors)))]
        return [out for part in ray.get(calls) for out in part]

    def close(self) -> None:
        """Stop the engines (their actors; each engine lives in its actor's process)."""
        import ray

        for a in getattr(self, "actors", []):
            ray.kill(a)
        self.actors = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit Ray may be gone already; its actors end with it
            pass


def build_engine(model_dir: str | Path, engine: EngineConfig, *, seed: int, parallel: DataParallel | None = None,
                 trust_remote_code: bool = False, **extra):
    """A `vllm.LLM` (core.engine.build_llm), or with `parallel` of two or more engines an EnginePool of them."""
    if parallel is None or parallel.engines < 2:
        return build_llm(model_dir, engine, seed=seed, trust_remote_code=trust_remote_code, **extra)
    return EnginePool(model_dir, engine, seed=seed, parallel=parallel, trust_remote_code=trust_remote_code, **extra)


def make_engine(config: Config, *, seed: int | None = None):
    """The configured model's engine, or engines (`runner.engines` on Ray), built from the config alone."""
    return build_engine(resolve_model(config.model.path), config.model.engine, seed=config.seed if seed is None else seed,
                        parallel=DataParallel.from_config(config), trust_remote_code=config.model.trust_remote_code)
