"""Training configuration: one typed, documented model, validated before any model loads.

    from core.config import load_config
    from core.train_config import TrainConfig
    cfg = load_config("configs/train/smollm2-135m-qlora.yaml", ["max_steps=20"], schema=TrainConfig)

Self-contained; the pipeline Config mounts it (plus the stage switches of
`TrainStageConfig`) as its `train:` section, and both are read by core.config's one
loader. Unknown keys are errors; every problem is reported at once with its key path.
Defaults live here; the YAML files in configs/train/ only say what differs and why.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.devices import Dtype

# The LoRA ranks vLLM's engine accepts as max_lora_rank (vllm.config.lora.MaxLoRARanks): an adapter of rank r
# is served with the smallest of them that is at least r, so a rank above the largest cannot be evaluated.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def served_lora_rank(rank: int) -> int:
    """The max_lora_rank vLLM serves a rank-`rank` adapter with: the smallest accepted rank >= `rank`."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above what vLLM serves; use at most {VLLM_LORA_RANKS[-1]} "
                     f"(vLLM's max_lora_rank takes {', '.join(map(str, VLLM_LORA_RANKS))})")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# How an exported model is served (trainers.parity checks each).
ServingPath = Literal["transformers", "vllm", "vllm-lora", "vllm-serve"]
SERVING_PATHS: tuple[str, ...] = get_args(ServingPath)


class ExportConfig(_Section):
    """The `export:` section of a pipeline config: after evaluation, the model as other stacks serve it."""

    enabled: bool = Field(False, description="export the evaluated adapter merged into its base (curate export), "
                          "a plain model folder with the trained chat template and stop token")
    parity: bool = Field(True, description="then answer the evaluated rows on every serving path and fail the run "
                         "when one answers otherwise (curate parity)")
    paths: list[ServingPath] = Field(default_factory=lambda: list(SERVING_PATHS), min_length=1,
                                     description="serving paths parity checks")
    min_agreement: float = Field(0.995, ge=0, le=1, description="share of rows each path must answer as evaluated")


# The data variants an ablation trains on: the rows as they stand after each curation stage, in pipeline order
# (raw = ingest only, its quarantine left out; then cumulatively clean, dedupe, balance, synthesis).
AblationVariant = Literal["raw", "clean", "dedupe", "balance", "synthesis"]
ABLATION_VARIANTS: tuple[str, ...] = get_args(AblationVariant)


class AblateConfig(_Section):
    """The `ablate:` section of a pipeline config: what each curation stage buys in model quality (curate ablate).

    The same recipe (`train:`) is trained on the data as it stands after each stage and evaluated on
    the final snapshot's eval split; each variant's seeds show the spread a difference must exceed."""

    enabled: bool = Field(False, description="after curation, train and evaluate the recipe on each variant's rows")
    variants: list[AblationVariant] = Field(
        default_factory=lambda: list(ABLATION_VARIANTS), min_length=1,
        description="data variants, each the train rows after that stage (raw = ingest only); compared in pipeline order")
    seeds: list[int] | None = Field(
        None, min_length=1, description="training seeds per variant (data order, LoRA init, validation split); several "
        "show the spread a stage's delta must exceed; null: train.seed alone")
    eval_max_rows: int | None = Field(
        None, gt=0, description="evaluate each run on a seeded sample of this many eval rows (null: train.eval_max_rows)")

    @field_validator("variants", "seeds")
    @classmethod
    def _distinct(cls, values: list | None) -> list | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError(f"each may appear once: {values}")
        return values

    def ordered_variants(self) -> list[str]:
        """The variants asked for, in pipeline order (each stage's delta is against the one before it)."""
        return [v for v in ABLATION_VARIANTS if v in self.variants]


class IterateConfig(_Section):
    """The `iterate:` section: evaluation directs synthesis (curate iterate).

    Round 1 is the run's own training. Each later round gives its synthesis budget to the classes the
    last round's evaluation scored worst (per-class recall, then the tuned model's confidence in the
    right label), has the synthesis model write candidates for them, keeps those the last round's tuned
    adapter labels as their intended class (blind), trains on the enlarged snapshot and evaluates it
    on the same eval split. The loop stops after `rounds`, or at the first round that gains less than
    `min_gain` macro-F1 (slot F1 for generation tasks) over the best round before it.

    The weak classes are read off the eval split, so later rounds' scores on it are not an unbiased
    estimate: report a held-out test split (the recipe's eval rows are chosen once, the classes each round)."""

    enabled: bool = Field(False, description="after training, run the rounds of evaluation-directed synthesis")
    rounds: int = Field(2, ge=2, le=20, description="rounds in all, the run's own training being round 1")
    budget: int = Field(120, gt=0, description="synthetic rows asked for per round, shared by the weakest classes")
    classes: int = Field(8, gt=0, description="how many of the weakest classes share a round's budget")
    focus_rows: int = Field(
        3, ge=0, description="per budgeted class, how many of its least-sure eval rows steer synthesis: the generator "
        "is shown the class's real training rows nearest to them (0: a random draw of the class, as synthesis does)")
    oversample: float = Field(
        3.0, ge=1.0, le=20.0, description="candidates written per row asked for (the tuned checker keeps ~1 in 2 on "
        "banking77); later attempts divide by the class's observed yield, as synthesis.oversample")
    min_confidence: float = Field(
        0.5, ge=0.0, le=1.0, description="a candidate is kept when the tuned adapter labels it as its intended class "
        "with at least this probability (its guided-choice answer's, trainers/checker.py)")
    min_gain: float = Field(0.0, description="stop when a round's macro-F1 gain over the best earlier round is below this")
    checker_memory_utilization: float = Field(
        0.1, gt=0, le=1, description="share of memory for the tuned checker's engine KV cache; it runs beside the "
        "synthesis engine")


class FormatConfig(_Section):
    """How a row becomes (prompt, completion). One format for training, evaluation and prediction."""

    template: str | None = Field(
        None,
        description="Jinja chat-template file (same variables as a HF chat template: messages, "
        "add_generation_prompt, bos_token, eos_token); null = the tokenizer's own chat template",
    )
    include_instruction: bool = Field(
        True,
        description="the task instruction as the system turn. A tuned model learns the task from its examples: "
        "off halves banking77's tokens (28 a row instead of 57) and so the training time. Pair it with a "
        "template that adds no system turn of its own (templates/formats/chatml.jinja); the base model's "
        "evaluation rows keep the instruction either way",
    )
    include_labels: bool = Field(
        False,
        description="classification: append the label list to the system prompt. Off by default: banking77's "
        "77 labels add ~400 tokens per example (5x the training cost); a tuned model does not need them",
    )
    stop_token: str | None = Field(
        None, description="end-of-turn token every completion ends with and inference stops on; null = tokenizer EOS"
    )
    add_special_tokens: bool = Field(
        False,
        description="let the tokenizer add its own BOS/EOS to the rendered text; off because chat templates "
        "already write them (on would double BOS for templates that start with it)",
    )


# The methods that train their adapter on a quantized base, and the weights that base is once dequantized:
# what the adapter learned around, and so what evaluation, export and serving put under it.
QUANTIZED_BASE = {"qlora": "nf4 round trip", "lora8": "int8 round trip"}


# Methods whose adapter vLLM cannot serve as a LoRA request (ia3: IA3's learned scaling vectors; adalora: LoRA
# in SVD form, P diag(E) Q, with the ranks it allocated while training): served merged into the base weights
# (peft merge_and_unload), never as a LoRA request.
MERGED_ONLY = frozenset({"ia3", "adalora"})

# Methods that read no lora_* key (IA3 learns one scaling vector per module: no rank, no alpha).
NO_LORA_KEYS = frozenset({"ia3"})


def served_as_lora(method: str) -> bool:
    """Whether vLLM can serve an adapter of `method` as a LoRA request (else only merged into its base)."""
    return method not in MERGED_ONLY


def base_weights(method: str) -> str:
    """The base weights an adapter of `method` was trained on: a bitsandbytes round trip, or the base itself."""
    return QUANTIZED_BASE.get(method, "base")


class TrainConfig(_Section):
    """QLoRA / LoRA supervised fine-tuning of a causal LM on a snapshot's train split."""

    method: Literal["qlora", "lora", "lora8", "adalora", "ia3"] = Field(
        "qlora", description="qlora: base weights 4-bit NF4 + double quantization (bitsandbytes); lora: base in the "
        "compute dtype; lora8: base weights LLM.int8 (bitsandbytes 8-bit). These train LoRA adapters, which vLLM "
        "serves merged or as a LoRA request on the base weights they were trained on. adalora: AdaLoRA on the base in "
        "the compute dtype, starting at rank 1.5 x lora_r and pruned to an average of lora_r by importance while "
        "training, served merged. ia3: IA3 scaling vectors on the base in the compute dtype (peft's default modules "
        "for the model; lora_* keys unused), served merged: vLLM serves LoRA adapters only"
    )
    lora_r: int = Field(8, gt=0, description="LoRA rank (any up to 512; vLLM serves it with "
                        "the smallest of its ranks 1, 8, 16, 32, 64, 128, 256, 320, 512 at least this)")
    lora_alpha: int = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: str | list[str] = Field(
        "all-linear", description="'all-linear' (every linear layer but the output head) or a list of module names"
    )
    max_seq_len: int = Field(256, gt=8, description="longest training sequence in tokens; longer rows are format violations")
    batch_size: int = Field(8, gt=0, description="examples (unpacked) or packed rows per device per step")
    grad_accum: int = Field(1, gt=0, description="gradient accumulation steps per optimizer step")
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate (LoRA typically 1e-4..3e-4)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on the LoRA weights (0: they are few and start at 0)")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of steps spent warming up linearly")
    scheduler: Literal["cosine", "linear", "constant_with_warmup"] = Field("cosine", description="LR schedule after warmup")
    epochs: float = Field(1.0, gt=0, description="passes over the training rows (ignored when max_steps > 0)")
    max_steps: int = Field(-1, description="optimizer steps; -1 = from epochs")
    eval_steps: int = Field(50, gt=0, description="validation loss every N steps; checkpoints are saved on the same steps")
    early_stopping_patience: int = Field(
        3, ge=0, description="stop after this many evaluations without validation-loss improvement; 0 = off"
    )
    val_size: int = Field(
        128, ge=0, description="rows held out of train (seeded) for validation loss / early stopping; "
        "the snapshot's eval split stays untouched for the final evaluation"
    )
    train_fraction: float = Field(
        1.0, gt=0, le=1, description="use this share of the training rows (seeded, nested: 0.25 is inside 0.5)"
    )
    max_train_examples: int | None = Field(None, gt=0, description="cap on training rows (quick runs, tests)")
    packing: bool = Field(
        True, description="pack short examples into max_seq_len rows (best-fit decreasing); a batch keeps its "
        "rows apart and attention does not cross examples (position ids restart; transformers builds a "
        "block-diagonal mask per row)"
    )
    gradient_checkpointing: bool = Field(True, description="recompute activations in backward: less memory, ~30% slower")
    logging_steps: int = Field(5, gt=0, description="training loss / LR to TensorBoard every N steps")
    save_total_limit: int = Field(2, gt=0, description="checkpoints kept (the best one is always kept)")
    seed: int = Field(0, description="seeds data order, LoRA init, dropout and the validation split")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    dtype: Dtype = Field(
        "auto", description="compute dtype of the base and the adapters; auto: bf16 where the hardware computes it natively, else float32 (core/devices.py)"
    )
    cpu_threads: int | None = Field(
        None, gt=0, description="torch CPU threads; null = torch's default (all cores). On a shared, loaded "
        "machine 1 thread measured 4x faster than 2 (OpenMP threads spin when oversubscribed)"
    )
    cpu_malloc_mmap_threshold: int | None = Field(
        None, ge=0, le=2**25,
        description="CPU: bytes from which an allocation gets its own memory map, unmapped when freed (glibc "
        "mallopt M_MMAP_THRESHOLD). null: glibc's adaptive default, fastest; a step's freed tensors settle in "
        "its heap. 131072: the least memory: on the bundled model QLoRA's training peak 501 MB instead of "
        "1,397, at 0.80x the tokens/s (LoRA 0.55x) in float32; 0.89-1.0x in bf16 (docs/training.md)",
    )
    runner: Literal["local", "ray"] = Field(
        "local", description="local: one training process; ray: Ray Train's TorchTrainer with `workers` DDP processes "
        "(gloo on CPUs, NCCL on GPUs: one worker per GPU) on the Ray cluster of RAY_ADDRESS (or a local Ray), "
        "the same TRL training and adapter format (trainers/ray_train.py)")
    workers: int = Field(2, ge=1, le=1024, description="runner ray: training workers; batch_size is the global batch, "
                         "split evenly between them (so the same steps see the same rows per step as one process)")
    worker_cpus: float = Field(1, gt=0, description="runner ray: Ray CPUs each worker reserves")
    max_failures: int = Field(
        1, ge=0, description="runner ray: a failed worker group is started again this many times, each resuming "
        "from the latest checkpoint Ray Train holds")
    output_dir: str = Field("data/runs/adapters", description="runs go to <output_dir>/<dataset>/<run name>/ (git-ignored)")
    allow_format_violations: bool = Field(
        False, description="train even when the token-level format check finds violations (they are still reported)"
    )
    format: FormatConfig = Field(FormatConfig(), description="how rows become prompts and completions (trainers/format.py)")

    @field_validator("lora_r")
    @classmethod
    def _servable_rank(cls, r: int) -> int:
        served_lora_rank(r)  # a rank vLLM has no max_lora_rank for could be trained but never evaluated
        return r

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        problems = []
        if self.max_steps == 0 or self.max_steps < -1:
            problems.append("max_steps must be -1 (use epochs) or positive")
        if isinstance(self.target_modules, list) and not self.target_modules:
            problems.append("target_modules must not be empty")
        if self.runner == "ray" and self.batch_size % self.workers:
            problems.append(f"batch_size {self.batch_size} is the global batch of runner ray: it must split evenly "
                            f"between its {self.workers} workers")
        if self.early_stopping_patience > 0 and self.val_size == 0:
            problems.append("early stopping needs validation rows: set val_size > 0 or early_stopping_patience 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class TrainStageConfig(TrainConfig):
    """The `train:` section of a pipeline config: a TrainConfig plus what the flow does after curation."""

    enabled: bool = Field(False, description="train (and evaluate) on the snapshot after curation, in the same flow")
    evaluate: bool = Field(True, description="evaluate the adapter on the snapshot's eval split after training")
    eval_baseline: bool = Field(True, description="also evaluate the base model zero-shot, side by side")
    eval_shots: int = Field(
        0, ge=0, description="few-shot examples (from train) for a base-model few-shot row; 0: none (its long prompts "
        "cost more than the rest of the evaluation on a CPU and it scores near zero on 77 intents)")
    eval_max_rows: int | None = Field(None, gt=0, description="evaluate on a seeded sample of this many eval rows (null: all)")
    eval_guided: bool = Field(True, description="classification: also score the tuned model's answers constrained to the "
                              "label set (guided choice)")
    eval_baseline_guided: bool = Field(False, description="classification: the base model with guided choice too")
    eval_label_probs: bool = Field(
        False, description="classification: also the tuned model's probability of every label for every eval row (a "
        "walk of the labels' token trie, exact for labels whose prefixes hold at least 1 % of the likeliest one's "
        "probability), its calibration "
        "beside the answers', and its top labels in predictions.jsonl (trainers/confidence.py)")
    eval_merged: bool = Field(
        False, description="serve the adapter merged into the base weights, not as a LoRA request: the same "
        "model, much faster with vLLM on a CPU (its LoRA ops copy the adapter's weights for every token)")

    def trainer_config(self) -> TrainConfig:
        """The training settings alone (the fields TrainConfig has), as trainers.qlora takes them."""
        return TrainConfig.model_validate(self.model_dump(include=set(TrainConfig.model_fields)))
