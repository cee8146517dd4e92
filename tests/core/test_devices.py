"""dtype: auto picks what the hardware computes natively (core/devices.py)."""

from __future__ import annotations

import pytest

from core.config import load_config
from core.devices import cpu_has_bf16, engine_cpu_env, engine_malloc_env, resolve_dtype
from core.train_config import TrainConfig


def test_explicit_dtypes_are_kept():
    for name in ("bfloat16", "float16", "float32"):
        assert resolve_dtype(name, device="cpu", flags={"avx2"}) == name


def test_auto_on_a_cpu_follows_its_bf16_instructions():
    assert resolve_dtype("auto", device="cpu", flags={"fma", "avx", "avx2"}) == "float32"
    assert resolve_dtype("auto", device="cpu", flags={"avx2", "avx512f", "avx512_bf16"}) == "bfloat16"
    assert resolve_dtype("auto", device="cpu", flags={"avx2", "amx_tile", "amx_bf16"}) == "bfloat16"
    assert cpu_has_bf16({"avx512f"}) is False


def test_unknown_dtype_is_an_error():
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("int8")


def test_engine_and_training_default_to_auto():
    assert load_config("configs/banking77.yaml").model.engine.dtype == "auto"
    assert TrainConfig().dtype == "auto"
    # this machine's answer is one of the two CPU choices
    assert resolve_dtype("auto", device="cpu") in {"bfloat16", "float32"}


def test_small_machines_give_the_engine_every_core():
    # vLLM keeps a core for its scheduler; on 2 cores `auto` binds both and reserves none
    assert engine_cpu_env("auto", cpus=[0, 1], environ={}) == {"VLLM_CPU_OMP_THREADS_BIND": "0,1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert engine_cpu_env("auto", cpus=list(range(16)), environ={}) == {}  # bigger machines: vLLM's own binding
    assert engine_cpu_env("vllm", cpus=[0, 1], environ={}) == {}
    assert engine_cpu_env("0-7", cpus=[0, 1], environ={}) == {"VLLM_CPU_OMP_THREADS_BIND": "0-7"}
    # what the user exported wins
    assert engine_cpu_env("auto", cpus=[0, 1], environ={"VLLM_CPU_OMP_THREADS_BIND": "1"}) == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def test_threads_bind_setting_is_validated():
    from core.config import ConfigError

    assert load_config("configs/banking77.yaml", ["model.engine.cpu_threads_bind=0-3|4-7"]).model.engine.cpu_threads_bind == "0-3|4-7"
    with pytest.raises(ConfigError, match="cpu_threads_bind"):
        load_config("configs/banking77.yaml", ["model.engine.cpu_threads_bind=all; rm -rf /"])


def test_the_engines_malloc_threshold_is_set_only_when_configured_and_not_exported():
    from core.config import ConfigError

    assert engine_malloc_env(None, environ={}) == {}  # glibc's adaptive default
    assert engine_malloc_env(131072, environ={}) == {"MALLOC_MMAP_THRESHOLD_": "131072"}
    assert engine_malloc_env(131072, environ={"MALLOC_MMAP_THRESHOLD_": "65536"}) == {}  # the user's export wins
    config = load_config("configs/banking77.yaml", ["model.engine.cpu_malloc_mmap_threshold=131072"])
    assert config.model.engine.cpu_malloc_mmap_threshold == 131072
    with pytest.raises(ConfigError, match="cpu_malloc_mmap_threshold"):
        load_config("configs/banking77.yaml", ["model.engine.cpu_malloc_mmap_threshold=-1"])


def test_the_trainers_malloc_threshold_is_fixed_in_its_process_unless_exported():
    """trainers.qlora fixes glibc's mmap threshold before the model loads (train.cpu_malloc_mmap_threshold);
    run in a child, whose malloc the test leaves as it was."""
    import os
    import subprocess
    import sys

    from pydantic import ValidationError

    code = "from core.devices import set_malloc_mmap_threshold as s; print(s(None), s(131072))"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["None", "True"], out.stderr  # null changes nothing; glibc takes a value
    out = subprocess.run([sys.executable, "-c", code], env=env | {"MALLOC_MMAP_THRESHOLD_": "65536"},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["None", "None"], out.stderr  # the user's export wins
    assert TrainConfig().cpu_malloc_mmap_threshold is None and TrainConfig(cpu_malloc_mmap_threshold=131072)
    with pytest.raises(ValidationError, match="cpu_malloc_mmap_threshold"):
        TrainConfig(cpu_malloc_mmap_threshold=-1)
