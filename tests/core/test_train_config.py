"""Training configuration: every shipped YAML loads, through the one loader of core.config; problems are reported all at once."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from core.config import ConfigError, load_config
from core.train_config import VLLM_LORA_RANKS, TrainConfig, served_lora_rank


@pytest.mark.parametrize("path", sorted(Path("configs/train").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_training_config_loads(path):
    cfg = load_config(path, schema=TrainConfig)
    assert cfg.method in path.name
    assert f"--config {path.as_posix()}" in path.read_text().split("\n\n")[0]  # launch command in the header


def test_shipped_configs_exist_for_both_methods():
    assert {p.name for p in Path("configs/train").glob("*.yaml")} >= {"smollm2-135m-qlora.yaml", "smollm2-135m-lora.yaml"}


def test_overrides_and_every_problem_reported(tmp_path):
    cfg = load_config(None, ["max_steps=20", "format.include_labels=true", "target_modules=[q_proj, v_proj]"], schema=TrainConfig)
    assert cfg.max_steps == 20 and cfg.format.include_labels and cfg.target_modules == ["q_proj", "v_proj"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: qlora4\nlora_r: 0\nbogus: 1\nformat: {templat: x}\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad, schema=TrainConfig)
    msg = str(err.value)
    assert "problem(s) in the training configuration" in msg
    for key in ("method", "lora_r", "bogus: unknown key", "format.templat: unknown key"):
        assert key in msg, msg


def test_defaults_are_the_documented_recipe():
    cfg = TrainConfig()
    assert (cfg.method, cfg.lora_r, cfg.lora_alpha, cfg.target_modules) == ("qlora", 8, 16, "all-linear")
    undocumented = [n for n, f in TrainConfig.model_fields.items() if not f.description]
    assert undocumented == [], undocumented


def test_the_rank_vllm_serves_an_adapter_with_is_the_smallest_it_accepts_at_or_above():
    from vllm.config.lora import MaxLoRARanks  # what vLLM's engine takes, so the list never drifts from it

    assert VLLM_LORA_RANKS == typing.get_args(MaxLoRARanks)
    assert [served_lora_rank(r) for r in (1, 2, 8, 12, 16, 17, 300, 320, 321, 512)] == [1, 8, 8, 16, 16, 32, 320, 320, 512, 512]
    with pytest.raises(ValueError, match="1, 8, 16, 32, 64, 128, 256, 320, 512"):
        served_lora_rank(513)


def test_a_rank_above_what_vllm_serves_is_refused_naming_the_allowed_ones(tmp_path):
    bad = tmp_path / "train.yaml"
    bad.write_text("lora_r: 600\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad, schema=TrainConfig)
    assert "lora_r" in str(exc.value) and "1, 8, 16, 32, 64, 128, 256, 320, 512" in str(exc.value)
