"""QLoRA (or plain LoRA) fine-tuning of a causal LM on a snapshot's train split, with TRL's SFTTrainer.

    adapter = train(snapshot_dir, model_dir, load_config("configs/train/smollm2-135m-qlora.yaml", schema=TrainConfig))
    curate train banking77 --config configs/train/smollm2-135m-qlora.yaml --set max_steps=20

setup -> fit -> validate -> save_checkpoint, shaped like litgpt's finetune/lora.py:

    setup            resolve the run folder, split train/validation (seeded), build the prompt format,
                     check every example token by token (refuse on violations unless
                     allow_format_violations), load the base (4-bit NF4 + double quant for qlora, bf16
                     for lora) and wrap it with LoRA adapters
    fit              SFTTrainer: loss on completions only (labels are -100 on the prompt, built by
                     trainers.format), best-fit-decreasing packing without attention across examples
                     (packed rows stay apart in the batch: trainers.packing),
                     gradient checkpointing, warmup + cosine, validation loss every eval_steps with early
                     stopping, checkpoints every eval_steps and resume from the latest after a crash,
                     TensorBoard logs in <run>/tb
    validate         validation loss of the final (best) weights
    save_checkpoint  <run>/adapter/: the LoRA weights, the format (format.json, format_template.jinja)
                     and the tokenizer files it was trained with, train_meta.json

The same code runs on CPU and GPU (device "auto"). Run folder layout:

    <out>/format_report.json  <out>/checkpoints/checkpoint-N/  <out>/tb/  <out>/adapter/
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.devices import malloc_trim, resolve_dtype, set_malloc_mmap_threshold, torch_dtype
from core.io import atomic_folder
from core.progress import Progress
from core.train_config import QUANTIZED_BASE, TrainConfig
from trainers import sft
from trainers.format import PromptFormat, TaskInfo, read_rows, task_info
from trainers.format_check import FormatViolationError, check_format
from trainers.model_card import META_FILE, write_model_card

ADAPTER_DIR = "adapter"


@dataclass
class Run:
    """What setup hands to fit: the config, the data in the format, the model, where to write."""

    cfg: TrainConfig
    run_dir: Path
    model_dir: Path
    snapshot_dir: Path
    fmt: PromptFormat
    train_rows: list[dict]
    val_rows: list[dict]
    model: Any = None
    device: str = "cpu"
    format_report: dict = field(default_factory=dict)
    trainer: Any = None


def set_threads(cfg: TrainConfig) -> None:
    if cfg.cpu_threads is not None:
        import torch

        torch.set_num_threads(cfg.cpu_threads)


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but torch sees no GPU")
    return requested


def split_rows(rows: list[dict], cfg: TrainConfig) -> tuple[list[dict], list[dict]]:
    """Seeded validation hold-out, then nested training subsets: the first fraction of one fixed
    permutation, so the 0.25 subset is inside the 0.5 subset (learning curves compare like with like)."""
    order = sorted(rows, key=lambda r: r["row_id"])
    random.Random(cfg.seed).shuffle(order)
    val, rest = order[: cfg.val_size], order[cfg.val_size:]
    n = max(1, math.ceil(len(rest) * cfg.train_fraction))
    if cfg.max_train_examples is not None:
        n = min(n, cfg.max_train_examples)
    return rest[:n], val


def keep_frozen_in_dtype(model, dtype) -> None:
    """The input embedding and the LM head (tied to it or not), frozen, back in `dtype`.

    After `prepare_model_for_kbit_training` every weight that is not 4-bit is float32. The
    embedding and the head are frozen under LoRA: float32 only doubles them. The loss still
    upcasts the logits to float32, as it does for LoRA on a bf16 base.
    """
    import torch

    if dtype == torch.float32:
        return
    modules = {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    for module in modules.values():
        for param in module.parameters():
            if param.dtype == torch.float32 and not param.requires_grad:
                param.data = param.data.to(dtype)


def quantization_config(dtype, method: str = "qlora"):
    """A quantized method's base (QLoRA: 4-bit NF4; lora8: LLM.int8, 8 bits with outliers in 16): how training
    loads it, and how inference rebuilds the weights it trained on."""
    from transformers import BitsAndBytesConfig

    if method == "lora8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if method != "qlora":
        raise ValueError(f"{method!r} trains on the base itself: no quantization")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",  # normal-float 4-bit: the QLoRA paper's data type for normal weights
        bnb_4bit_use_double_quant=True,  # quantize the quantization constants too (~0.4 bit/param saved)
        bnb_4bit_compute_dtype=dtype,
    )


def peft_config(cfg: TrainConfig, model_type: str):
    """The adapter peft wraps the base with: LoRA for qlora / lora / lora8; AdaLoRA for adalora (its step schedule
    is set when training starts: `_adalora_callback`); IA3 (its scaling vectors on peft's modules for `model_type`,
    the feed-forward ones scaling their input) for ia3."""
    from peft import AdaLoraConfig, IA3Config, LoraConfig
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD

    if cfg.method == "ia3":
        if cfg.target_modules == "all-linear":  # IA3's own choice: peft's mapping for the model type
            return IA3Config(task_type="CAUSAL_LM")
        modules = [cfg.target_modules] if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
        return IA3Config(target_modules=modules, task_type="CAUSAL_LM",
                         feedforward_modules=[m for m in modules if m in FEEDFORWARD.get(model_type, [])])
    if cfg.method == "adalora":
        # The AdaLoRA paper's shape: start at 1.5x the target rank, prune to an average of lora_r per matrix.
        # total_step=1 is a placeholder peft requires here: the real schedule needs the trainer's step count.
        return AdaLoraConfig(init_r=max(cfg.lora_r * 3 // 2, cfg.lora_r + 1), target_r=cfg.lora_r,
                             lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                             target_modules=cfg.target_modules, total_step=1, task_type="CAUSAL_LM")
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, bias="none", task_type="CAUSAL_LM")


def adalora_schedule(total_steps: int) -> dict:
    """AdaLoRA's phases over a run of `total_steps`: the first 10 % at the initial rank (tinit), pruning by
    importance every deltaT steps, then the last 30 % at the allocated ranks (tfinal): the budget reaches lora_r
    per matrix on average at the step the last phase begins.

    tinit is at least one step: AdaLoRA's singular values start at zero, so the first step's gradients of
    every weight are zero, and an allocation on them alone would score every rank alike and prune all of
    them. The shortest run that allocates is three steps (one, then one scored, then the last phase)."""
    tinit = min(max(1, total_steps // 10), total_steps - 1)
    tfinal = max(0, min(max(1, total_steps * 3 // 10), total_steps - 1 - tinit))
    return {"total_step": total_steps, "tinit": tinit, "tfinal": tfinal, "deltaT": max(1, total_steps // 100)}


def load_model(model_dir: str | Path, cfg: TrainConfig, device: str):
    """The base model (4-bit NF4 for qlora, int8 for lora8) wrapped with its trainable adapter (`peft_config`)."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    if device == "cpu":  # before the load: its full-precision pass is the first big transient
        set_malloc_mmap_threshold(cfg.cpu_malloc_mmap_threshold)
    dtype = torch_dtype(cfg.dtype, device=device)  # auto: float32 on a CPU without bf16 instructions
    kwargs: dict = {"dtype": dtype, "device_map": {"": device}}
    if cfg.method in QUANTIZED_BASE:
        kwargs["quantization_config"] = quantization_config(dtype, cfg.method)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if cfg.method in QUANTIZED_BASE:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        # peft casts every weight that is not 4-bit to float32, for the norms' stability. The
        # (tied) embedding is frozen and, at this family's 49,152-token vocabulary, the largest
        # of them: in float32 it held twice what the bf16 LoRA baseline holds for it (docs/training.md).
        # It goes back to the compute dtype; the norms stay in float32. (Not under lora8: LLM.int8 layers
        # answer in their input's dtype, float32 after those norms, which a bf16 head would refuse.)
        if cfg.method == "qlora":
            keep_frozen_in_dtype(model, dtype)
    elif cfg.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    model = get_peft_model(model, peft_config(cfg, model.config.model_type))
    # Loading passes through the full-precision weights (quantized layer by layer for qlora)
    # and glibc keeps what was freed: a 4-bit load of the bundled model held 784 MB above
    # the process's start, 594 MB once trimmed (bench/bench_train.py, docs/training.md).
    malloc_trim()
    return model


def to_dataset(fmt: PromptFormat, rows: list[dict]):
    """Tokenized rows (input_ids, labels) through the one format function; TRL then skips its own tokenization."""
    import datasets

    encoded = [fmt.encode(r["input"], r["output"]) for r in rows]
    return datasets.Dataset.from_dict(
        {"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]}
    )


def default_run_dir(snapshot_dir: Path, cfg: TrainConfig) -> Path:
    """<output_dir>/<dataset>/<snapshot>-<method>-r<rank>-f<fraction>-s<seed>: where `curate train` trains by default."""
    manifest = json.loads((Path(snapshot_dir) / "manifest.json").read_text())
    name = f"{Path(snapshot_dir).name}-{cfg.method}-r{cfg.lora_r}-f{cfg.train_fraction:g}-s{cfg.seed}"
    return Path(cfg.output_dir) / manifest.get("name", Path(snapshot_dir).parent.name) / name


def setup(snapshot_dir: str | Path, model_dir: str | Path, cfg: TrainConfig, task_cfg: Any = None,
          out_dir: str | Path | None = None, *, load: bool = True, check: bool = True) -> Run:
    """Everything up to the first step; raises FormatViolationError before any model loads.

    `check` False skips the token-level check, for the workers of a distributed run whose driver
    ran it (trainers.ray_train)."""
    snapshot_dir, model_dir = Path(snapshot_dir), Path(model_dir)
    task: TaskInfo = task_info(snapshot_dir, task_cfg)
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir(snapshot_dir, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)

    fmt = PromptFormat.from_model(model_dir, task, cfg.format)
    train_rows, val_rows = split_rows(read_rows(snapshot_dir, "train"), cfg)
    eval_rows = read_rows(snapshot_dir, "eval")
    report = {}
    if check:
        checked = check_format(fmt, train_rows + val_rows + eval_rows, max_seq_len=cfg.max_seq_len,
                               packing=cfg.packing, batch_size=cfg.batch_size)
        report = checked.to_dict()
        (run_dir / "format_report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(checked.summary(), file=sys.stderr)
        if not checked.ok and not cfg.allow_format_violations:
            raise FormatViolationError(
                checked.summary() + f"\nTraining refused: fix the format (train.format) or set "
                f"allow_format_violations: true. Full list: {run_dir / 'format_report.json'}"
            )
        (run_dir / "train_config.json").write_text(cfg.model_dump_json(indent=2) + "\n")
        (run_dir / "run.json").write_text(json.dumps({"snapshot": str(snapshot_dir), "base_model": str(model_dir.resolve()),
                                                      "train_rows": len(train_rows), "val_rows": len(val_rows)}, indent=2) + "\n")
    run = Run(cfg, run_dir, model_dir, snapshot_dir, fmt, train_rows, val_rows, format_report=report)
    run.device = pick_device(cfg.device)
    if load:
        reset_peak_memory(run.device)  # the peak a run records is its own, not its process's (a sweep trains many)
        run.model = load_model(model_dir, cfg, run.device)
    return run


def _format_callback(fmt: PromptFormat):
    """Write the format and tokenizer into every checkpoint: any checkpoint is a usable adapter folder."""
    from transformers import TrainerCallback

    class SaveFormat(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and ckpt.is_dir():  # the process that wrote it
                fmt.save(ckpt)

    return SaveFormat()


def _progress_callback():
    """Steps, loss and an ETA as `curate.progress` lines (core.progress): at least every 20 s while training."""
    from transformers import TrainerCallback

    class StepProgress(TrainerCallback):
        progress: Progress | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:  # one progress line per run, not per worker
                return
            self.progress = Progress("training", total=state.max_steps, unit="steps").__enter__()
            self.progress.update(state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(state.global_step, total=state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.progress is not None and logs:
                extra = {"loss": float(logs["loss"])} if "loss" in logs else {}
                if "eval_loss" in logs:
                    extra["val loss"] = float(logs["eval_loss"])
                self.progress.update(state.global_step, **extra)

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(state.global_step)
                self.progress.__exit__(None, None, None)
                self.progress = None

    return StepProgress()


def _adalora_callback():
    """AdaLoRA's rank allocation, which peft leaves to the training loop: the schedule once the trainer knows its
    step count, then `update_and_allocate` after every optimizer step, while the gradients it scores are there."""
    from transformers import TrainerCallback

    class AllocateRanks(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            adalora = model.base_model
            config = adalora.peft_config[adalora.trainable_adapter_name]
            for key, value in adalora_schedule(state.max_steps).items():
                setattr(config, key, value)  # the rank allocator reads this same config object

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            model.base_model.update_and_allocate(state.global_step)

    return AllocateRanks()


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return next((c for c in reversed(ckpts) if (c / "trainer_state.json").is_file()), None)


def main_process() -> bool:
    """Whether this is the process that writes (rank 0 of a distributed run, or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0


def fit(run: Run, *, resume: bool = True, callbacks: list | None = None, packed_rows: bool = True,
        labelled_only: bool = True, workers: int = 1, checkpoint: Path | None = None):
    """Train with SFTTrainer (trainers.sft); resumes from the latest complete checkpoint in the run folder
    (or from `checkpoint`, the one a distributed run's cluster holds).

    `workers` > 1: this process is one of a DDP group (trainers.ray_train); each takes an equal
    share of the global batch `batch_size`, and only rank 0 writes checkpoints and logs.

    With packing, `packed_rows` keeps the batch's packed rows apart (trainers.packing); False
    gives TRL's padding-free batch, every row joined into one, which is only for varlen
    attention kernels. `labelled_only` runs the LM head only where a label is, on the CPU too;
    False gives TRL's head over every position there. The False settings are the benchmark's
    baselines (bench/bench_train.py)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers import EarlyStoppingCallback
    from transformers.integrations import TensorBoardCallback
    from trl import SFTConfig

    cfg = run.cfg
    early = cfg.early_stopping_patience > 0 and bool(run.val_rows)
    args = SFTConfig(
        output_dir=str(run.run_dir / "checkpoints"),
        max_length=cfg.max_seq_len,
        packing=cfg.packing,
        packing_strategy="bfd",  # best-fit decreasing: whole examples only, never cut
        per_device_train_batch_size=cfg.batch_size // workers,
        per_device_eval_batch_size=cfg.batch_size // workers,
        # DDP: every LoRA weight takes part in each step; no search for unused ones
        ddp_find_unused_parameters=False if workers > 1 else None,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        eval_strategy="steps" if run.val_rows else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.eval_steps,  # same steps as evaluation: the best checkpoint is always on disk
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=cfg.logging_steps,
        report_to="none",  # TensorBoard is added below with an explicit folder
        seed=cfg.seed,
        data_seed=cfg.seed,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        # autocast in the compute dtype: bf16 on GPUs and CPUs with bf16 instructions; float32
        # (no autocast) on other CPUs, where bf16 is converted in software and 4-5x slower
        bf16=(dtype := resolve_dtype(cfg.dtype, device=run.device)) == "bfloat16",
        fp16=dtype == "float16",
        use_cpu=run.device == "cpu",
        completion_only_loss=True,  # labels already carry -100 on the prompt; kept explicit for readers
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    cbs = [_format_callback(run.fmt), _progress_callback()]
    if main_process():
        cbs.insert(0, TensorBoardCallback(tb_writer=SummaryWriter(str(run.run_dir / "tb"))))
    if early:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if cfg.method == "adalora":
        cbs.append(_adalora_callback())
    trainer = sft.CurateSFTTrainer(
        model=run.model,
        args=args,
        train_dataset=to_dataset(run.fmt, run.train_rows),
        eval_dataset=to_dataset(run.fmt, run.val_rows) if run.val_rows else None,
        processing_class=run.fmt.tokenizer,
        callbacks=cbs + list(callbacks or []),
        packed_rows=packed_rows,
        labelled_only=labelled_only,
    )
    run.trainer = trainer
    ckpt = checkpoint or (latest_checkpoint(run.run_dir) if resume else None)
    if ckpt is not None:
        print(f"resuming from {ckpt}", file=sys.stderr)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    run.trainer.fit_seconds = time.perf_counter() - started
    run.trainer.resumed_from = str(ckpt) if ckpt else None
    return result


def validate(run: Run) -> dict:
    """Validation loss of the weights the trainer ends with (the best ones with early stopping).

    Without early stopping the last weights are the ones kept: a validation the trainer ran at
    the final step is that result already, and is not run twice."""
    if not run.val_rows:
        return {}
    state = run.trainer.state
    last = next((h for h in reversed(state.log_history) if "eval_loss" in h), None)
    if last is not None and last.get("step") == state.global_step and not run.trainer.args.load_best_model_at_end:
        return {k: float(v) for k, v in last.items() if k.startswith("eval_")}
    return {k: float(v) for k, v in run.trainer.evaluate().items()}


def reset_peak_memory(device: str) -> bool:
    """Start the peak `peak_memory_mb` reads from now: CUDA's peak statistics, or on a CPU the process's resident
    high-water mark (Linux: writing 5 to /proc/self/clear_refs sets VmHWM to the current resident size).
    False where it could not be reset (not Linux, or not allowed): the peak stays the process's since its start."""
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: str) -> float:
    """Peak accelerator memory on GPU; peak resident memory on CPU, both since `reset_peak_memory`."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def save_checkpoint(run: Run, metrics: dict | None = None) -> Path:
    """The adapter folder: LoRA weights + the format and tokenizer it was trained with + metadata."""
    adapter_dir = run.run_dir / ADAPTER_DIR
    # Filled under a temporary name and renamed: a folder named adapter/ is always complete.
    with atomic_folder(adapter_dir, prefix=".tmp-adapter-") as tmp:
        _write_adapter(run, tmp, metrics)
    return adapter_dir


def _write_adapter(run: Run, folder: Path, metrics: dict | None) -> None:
    run.trainer.model.save_pretrained(str(folder))
    run.fmt.save(folder)
    history = run.trainer.state.log_history
    manifest = json.loads((run.snapshot_dir / "manifest.json").read_text())
    meta = {
        "base_model": str(run.model_dir.resolve()),
        "method": run.cfg.method,
        "snapshot": str(run.snapshot_dir),
        "snapshot_id": manifest.get("snapshot_id"),
        "dataset": manifest.get("name"),
        "train_rows": len(run.train_rows),
        "val_rows": len(run.val_rows),
        "device": run.device,
        "global_step": run.trainer.state.global_step,
        "best_checkpoint": run.trainer.state.best_model_checkpoint,
        "resumed_from": getattr(run.trainer, "resumed_from", None),
        "fit_seconds": round(getattr(run.trainer, "fit_seconds", 0.0), 1),
        # tokens trained (not padding), over every worker of a distributed run
        "train_tokens": next((int(h["num_tokens"]) for h in reversed(history) if "num_tokens" in h),
                             getattr(run.trainer, "_total_train_tokens", None)),  # TRL's count, logged or not
        "peak_memory_mb": round(peak_memory_mb(run.device), 1),
        "train_loss": [h["loss"] for h in history if "loss" in h],
        "eval_loss": [h["eval_loss"] for h in history if "eval_loss" in h],
        "metrics": metrics or {},
        "config": run.cfg.model_dump(mode="json"),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    write_model_card(folder, folder)  # in place of peft's stub; with metrics once evaluated (trainers.evaluate)


def train(snapshot_dir: str | Path, model_dir: str | Path, train_cfg: TrainConfig | None = None, task_cfg: Any = None,
          out_dir: str | Path | None = None, *, resume: bool = True, callbacks: list | None = None) -> Path:
    """setup -> fit -> validate -> save_checkpoint; returns the adapter folder."""
    from transformers import set_seed

    cfg = train_cfg or TrainConfig()
    set_seed(cfg.seed)
    set_threads(cfg)
    run = setup(snapshot_dir, model_dir, cfg, task_cfg, out_dir)
    fit(run, resume=resume, callbacks=callbacks)
    metrics = validate(run)
    return save_checkpoint(run, metrics)


def read_meta(adapter_dir: str | Path) -> dict:
    return json.loads((Path(adapter_dir) / META_FILE).read_text())
