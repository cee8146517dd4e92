"""The tuned adapter as synthesis's label check: it labels each candidate blind, in its own training format.

    checker = TunedChecker(adapter_dir, engine_config, labels, work_dir=out / "checker")
    checker.label(["my card never came", ...])        # [("card_arrival", 0.97), ...]

The base model's few-shot check (templates/*_label_check.jinja) labels 62 % of real banking77
eval messages right; the adapter trained on the data labels 86-88 %. Each candidate's label is the
most probable label of the adapter's distribution over the label set (trainers/confidence.py: every
label's completion scored exactly, not greedy guided decoding), and its probability is the check's
confidence. The adapter is merged into its base and served by its own vLLM engine (on a CPU a
LoRARequest's ops are several times slower), beside the synthesis engine: give it a small KV cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from core.config import EngineConfig
from core.engine_pool import build_engine
from trainers.confidence import LabelTrie, label_distribution, vllm_next_logprobs
from trainers.format import PromptFormat
from trainers.predict import merge_adapter


class TunedChecker:
    """Labels texts with a tuned adapter (synthesis.synthesize.Checker)."""

    def __init__(self, adapter_dir: str | Path, engine: EngineConfig, labels: Sequence[str], *, work_dir: str | Path,
                 seed: int = 0, memory_utilization: float | None = None):
        self.fmt = PromptFormat.load(adapter_dir)
        self.trie = LabelTrie.build(self.fmt, labels)
        self.name = f"tuned:{Path(adapter_dir).resolve().parent.name}"  # the adapter's run folder: its content key
        if memory_utilization is not None:
            engine = engine.model_copy(update={"gpu_memory_utilization": memory_utilization})
        self.adapter_dir, self.engine, self.work_dir, self.seed = Path(adapter_dir), engine, Path(work_dir), seed
        self.llm = None  # built at the first call: synthesis checks its templates before any model starts

    def label(self, texts: Sequence[str]) -> list[tuple[str | None, float | None]]:
        if self.llm is None:
            merged = merge_adapter(self.adapter_dir, self.work_dir / "merged-model", dtype=self.engine.dtype)
            self.llm = build_engine(merged, self.engine, seed=self.seed)
        prompts = [self.fmt.encode(t).prompt_ids for t in texts]
        return [d.best for d in label_distribution(prompts, self.trie, vllm_next_logprobs(self.llm))]
