"""The tuned adapter as synthesis's label check: it labels each candidate blind, in its own training format.

    checker = TunedChecker(adapter_dir, engine_config, labels, work_dir=out / "checker")
    checker.label(["my card never came", ...])        # [("card_arrival", 0.97), ...]

The base model's few-shot check (templates/*_label_check.jinja) labels 62 % of real banking77
eval messages right; the adapter trained on the data labels 86-88 %. Each candidate gets the
adapter's answer under guided choice among the labels (vLLM structured outputs: one greedy request
per text) and, as the check's confidence, that answer's probability: the product of its tokens'
probabilities, each among the tokens the constraint allowed. The exact distribution over the labels
(trainers/confidence.py) walks one engine call per token depth and took ~10 min for 330 banking77
candidates on 2 cores, where this takes one pass. The adapter is merged into its base and served by
its own vLLM engine (on a CPU a LoRARequest's ops are several times slower), beside the synthesis
engine: give it a small KV cache.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from core.config import EngineConfig
from core.engine_pool import build_engine
from trainers.format import PromptFormat
from trainers.predict import generate_vllm, merge_adapter


class TunedChecker:
    """Labels texts with a tuned adapter (synthesis.synthesize.Checker)."""

    def __init__(self, adapter_dir: str | Path, engine: EngineConfig, labels: Sequence[str], *, work_dir: str | Path,
                 seed: int = 0, memory_utilization: float | None = None):
        self.fmt, self.labels = PromptFormat.load(adapter_dir), list(labels)
        self.max_new_tokens = max(len(self.fmt.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in labels) + 4
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
        gens = generate_vllm(None, self.fmt, prompts, max_new_tokens=self.max_new_tokens, llm=self.llm, choices=self.labels)
        return [(g.answer if g.answer in self.labels else None, None if g.logprob is None else math.exp(g.logprob))
                for g in gens]
