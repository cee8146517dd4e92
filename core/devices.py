"""What the machine offers: the number format it computes fastest in (`dtype: auto` in the
configs), the engine's cores and malloc settings, and how much memory is left.

    from core.devices import resolve_dtype
    resolve_dtype("auto")            # "bfloat16" on a GPU or a CPU with bf16 instructions, else "float32"

bf16 halves memory and is what the bundled checkpoint is stored in, but only some
CPUs compute in it natively (AVX512-BF16 or AMX). Elsewhere every bf16 matrix product
is converted on the fly: on a 2-core AVX2 machine (AMD EPYC, 2026-11) a 512x576x1536
linear ran at 79 GFLOP/s in float32 and 15 in bfloat16, and vLLM generated about 4x more
tokens per second in float32 (docs/benchmarks.md). So `auto` picks per machine, the
vLLM engine (synthesis, evaluation) and training alike; an explicit dtype is used as
given.
"""

from __future__ import annotations

import ctypes
import os
import resource
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import psutil

Dtype = Literal["auto", "bfloat16", "float16", "float32"]  # the configs' `dtype` fields
DTYPES = get_args(Dtype)


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 instructions).

    `flags` are /proc/cpuinfo flags (read when not given); without them (not Linux), torch asks.
    """
    if flags is None:
        flags = _cpu_flags()
    if flags:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    try:
        import torch

        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (ImportError, AttributeError):
        return False


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_dtype(name: str, *, device: str = "auto", flags: set[str] | None = None) -> str:
    """The dtype to compute in: `name` itself unless it is "auto".

    auto: on a CUDA device bfloat16 where supported, else float16; on the CPU bfloat16
    with native bf16 instructions, else float32. `device` is "cuda", "cpu" or "auto"
    (cuda when torch sees one).
    """
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, not {name!r}")
    if name != "auto":
        return name
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    if device == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_bf16(flags) else "float32"


def torch_dtype(name: str, *, device: str = "auto"):
    """`resolve_dtype` as a torch.dtype."""
    import torch

    return getattr(torch, resolve_dtype(name, device=device))


# Up to this many usable CPUs, `cpu_threads_bind: auto` gives the engine all of them.
SMALL_MACHINE_CPUS = 4


def usable_cpus() -> list[int]:
    """The cores this process may run on (its affinity), in order."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def engine_cpu_env(setting: str, *, cpus: list[int] | None = None, environ: dict | None = None) -> dict[str, str]:
    """Environment for vLLM's CPU engine: which cores its OpenMP threads are bound to.

    vLLM's CPU build binds its worker's threads to all cores but one, which it keeps
    for its scheduler. On a 2-core machine that is one core for the model: binding both
    (`VLLM_CPU_OMP_THREADS_BIND=0,1`, no reserved core) generated 1.76x the tokens per
    second on 2026-11-30's 2-core AVX2 machine (docs/benchmarks.md). So `auto` binds
    every usable core on machines of up to SMALL_MACHINE_CPUS and leaves bigger ones to
    vLLM; `vllm` always leaves it to vLLM; anything else is VLLM_CPU_OMP_THREADS_BIND's
    own syntax ("0-7", "nobind"). Variables already set in the environment win.
    """
    environ = os.environ if environ is None else environ
    if cpus is None:
        cpus = usable_cpus()
    if setting == "vllm" or (setting == "auto" and len(cpus) > SMALL_MACHINE_CPUS):
        env = {}
    elif setting == "auto":
        env = {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cpus)), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    else:
        env = {"VLLM_CPU_OMP_THREADS_BIND": setting}
    return {k: v for k, v in env.items() if k not in environ}


def engine_malloc_env(mmap_threshold: int | None, *, environ: dict | None = None) -> dict[str, str]:
    """Environment for vLLM's CPU engine processes: glibc malloc's mmap threshold, when set.

    glibc serves allocations below its mmap threshold from its heap, and raises that
    threshold (up to 32 MB) each time it frees a larger mapped block. The CPU worker
    frees tensors of shifting sizes every step, so after a while most of them land in
    the heap, which fragments and grows: +0.7 GB over 1,272 synthesis prompts on
    2026-11-30's machine. A fixed threshold (MALLOC_MMAP_THRESHOLD_) maps every
    allocation above it on its own and unmaps it when freed; at 131072 the heap stayed
    flat, and the engine made ~20 % fewer prompts per second (docs/reliability.md).
    None leaves glibc's adaptive default; a variable already set in the environment wins.
    """
    environ = os.environ if environ is None else environ
    if mmap_threshold is None or "MALLOC_MMAP_THRESHOLD_" in environ:
        return {}
    return {"MALLOC_MMAP_THRESHOLD_": str(mmap_threshold)}


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def set_malloc_mmap_threshold(threshold: int | None) -> bool | None:
    """This process's glibc malloc mmap threshold, fixed from now on (what MALLOC_MMAP_THRESHOLD_
    sets at start; see engine_malloc_env). Allocations from `threshold` bytes up get their own
    memory map and go back to the system when freed, instead of settling in the heap once
    glibc's adaptive threshold has risen past their size.

    Returns whether glibc took it; None when `threshold` is None (nothing changed) or where the
    C library has no mallopt. A MALLOC_MMAP_THRESHOLD_ already in the environment wins.
    """
    if threshold is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    return bool(mallopt(M_MMAP_THRESHOLD, int(threshold)))


def malloc_trim() -> bool | None:
    """Give the free pages of this process's malloc heaps back to the system (glibc's malloc_trim).

    Returns whether any were released; None where the C library has no malloc_trim.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return bool(trim(0))


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def rss_bytes() -> int:
    """This process's resident memory."""
    return psutil.Process().memory_info().rss


def _cgroup_headroom() -> int | None:
    """What this process's cgroup may still allocate: its limit less its usage (cgroup v2's
    memory.max and memory.current, or v1's limit_in_bytes and usage_in_bytes). None: no limit."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as fh:
            groups = dict(line.rstrip("\n").split(":", 2)[1:] for line in fh if line.count(":") >= 2)
    except OSError:
        return None
    root = Path("/sys/fs/cgroup")
    pairs = []
    if "" in groups:  # v2; in a container the group is the mount's root
        pairs += [(root / groups[""].lstrip("/") / "memory.max", root / groups[""].lstrip("/") / "memory.current"),
                  (root / "memory.max", root / "memory.current")]
    if "memory" in groups:  # v1
        pairs += [(root / "memory" / groups["memory"].lstrip("/") / "memory.limit_in_bytes",
                   root / "memory" / groups["memory"].lstrip("/") / "memory.usage_in_bytes"),
                  (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes")]
    for limit, usage in pairs:
        try:
            cap = limit.read_text().strip()
            if cap != "max":
                return int(cap) - int(usage.read_text())
            return None
        except (OSError, ValueError):
            continue
    return None


def memory_headroom_bytes() -> int:
    """How much more resident memory this process can take before the machine or its cgroup
    refuses: the smaller of the machine's available memory (MemAvailable) and its cgroup's
    limit less what the cgroup holds."""
    room = [psutil.virtual_memory().available]
    if (cgroup := _cgroup_headroom()) is not None:
        room.append(cgroup)
    return max(0, min(room))


def address_space_limit() -> int | None:
    """This process's address-space limit (RLIMIT_AS, `ulimit -v`) in bytes; None: unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def vms_bytes() -> int:
    """This process's virtual size, what RLIMIT_AS counts."""
    return psutil.Process().memory_info().vms
