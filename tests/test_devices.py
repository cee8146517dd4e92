"""dtype: auto picks what the hardware computes natively (curate/devices.py)."""

from __future__ import annotations

import pytest

from curate.config import load_config
from curate.devices import cpu_has_bf16, resolve_dtype
from trainers.config import TrainConfig


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
