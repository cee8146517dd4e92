"""Training on Ray Train (trainers/ray_train.py): 2 local CPU workers (DDP over gloo), a killed run resumed from
the checkpoint Ray Train holds, and the adapter trainers.qlora writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import load_config
from core.model import resolve_model
from core.train_config import FormatConfig, TrainConfig
from flows.tasks import train_run_dir
from tests.trainers import make_snapshot
from trainers.qlora import read_meta

STEPS = 6
RAY_TINY = dict(max_steps=STEPS, eval_steps=2, batch_size=4, val_size=4, max_seq_len=128, learning_rate=1e-3,
                logging_steps=1, early_stopping_patience=0, lora_dropout=0.0, runner="ray", workers=2,
                # a path of the project's, relative as configs give them: the workers read it where the driver does
                format=FormatConfig(template="templates/formats/chatml.jinja", include_instruction=False))

DRIVER = """
import sys
from core.train_config import TrainConfig
from flows.logs import console_log
from trainers.ray_train import train_on_ray
console_log(sys.stdout)  # the workers' progress, relayed to this process's `curate` lines
snap, model, out, cfg = sys.argv[1:5]
print("ADAPTER", train_on_ray(snap, model, TrainConfig.model_validate_json(cfg), out_dir=out, num_cpus=2), flush=True)
"""


def _driver(snap: Path, out: Path, cfg: TrainConfig) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(snap), str(resolve_model(None)), str(out), cfg.model_dump_json()],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})


def _reported(out: Path) -> list[str]:
    """The checkpoints Ray Train has registered for the run (its checkpoint manager's record)."""
    path = out / "ray" / "train" / "checkpoint_manager_snapshot.json"
    try:
        return [r["checkpoint_dir_name"] for r in json.loads(path.read_text())["checkpoint_results"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


@pytest.mark.slow
def test_two_ray_workers_train_resume_a_killed_run_and_write_the_adapter(tmp_path):
    snap, out, cfg = make_snapshot(tmp_path / "snap"), tmp_path / "run", TrainConfig(**RAY_TINY)
    first = _driver(snap, out, cfg)
    deadline = time.time() + 400
    while "checkpoint-2" not in _reported(out):  # killed once Ray holds its first checkpoint
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline, "no checkpoint reported in time"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # the driver, its local Ray and both workers
    first.wait(timeout=60)
    assert not (out / "adapter").exists()

    second = _driver(snap, out, cfg)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output[-3000:]
    adapter = Path(output.split("ADAPTER ")[-1].strip())
    assert adapter == out / "adapter"
    assert "training: " in output and "/6 steps" in output  # rank 0's progress reached the driver's log
    meta = read_meta(adapter)
    assert meta["global_step"] == STEPS
    resumed = Path(meta["resumed_from"])  # the checkpoint Ray Train kept, not a folder of the trainer's own
    assert resumed.parent == out / "ray" / "train" and int(resumed.name.split("-")[-1]) >= 2
    assert meta["config"]["runner"] == "ray" and meta["config"]["workers"] == 2
    losses = meta["train_loss"]
    assert len(losses) == STEPS and losses[-1] < losses[0] - 1  # the steps before the kill come with the checkpoint
    assert meta["train_tokens"] > 0

    # The adapter is the one trainers.qlora writes: it loads onto the base with peft, its LoRA weights trained
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert {"adapter_model.safetensors", "adapter_config.json", "format.json", "train_meta.json"} <= {p.name for p in adapter.iterdir()}
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(resolve_model(None)), dtype=torch.float32),
                                      str(adapter))
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and all(float(p.abs().sum()) > 0 for p in lora_b)  # LoRA's B starts at zero: these were trained


def test_ray_training_splits_the_global_batch():
    with pytest.raises(Exception, match="split evenly"):
        load_config(None, ["runner=ray", "workers=3", "batch_size=8"], schema=TrainConfig)
    assert load_config(None, ["runner=ray", "workers=4", "batch_size=8"], schema=TrainConfig).workers == 4
    assert load_config(None, ["workers=3", "batch_size=8"], schema=TrainConfig).runner == "local"  # workers unused here


def test_where_training_runs_is_in_its_run_folder_key_only_on_ray(tmp_path):
    """The workers of a Ray run each see a share of every batch: another adapter, another folder. Unused (runner
    local), the Ray settings leave the key, and so every adapter trained before they existed, as it was."""
    snap = make_snapshot(tmp_path / "snap")

    def key(*overrides: str) -> str:
        return train_run_dir(load_config("configs/banking77.yaml", list(overrides)), snap).name

    assert key() == key("train.workers=4") == key("train.max_failures=3")
    assert key("train.runner=ray") != key()
    assert key("train.runner=ray", "train.workers=4") != key("train.runner=ray")
    assert key("train.runner=ray", "train.worker_cpus=2") == key("train.runner=ray")  # speed only
