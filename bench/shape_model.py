"""A randomly initialised model of a bigger SmolLM2's shape, for memory benchmarks only.

    .venv/bin/python bench/shape_model.py smollm2-360m          # -> bench/out/models/smollm2-360m/

What a training step holds (weights, LoRA state, activations) depends on a model's shape and
dtypes, not on its weights' values. The only weights shipped here are the 135M model's, and at
that size the base is too small a part of a step's memory for 4-bit weights to show (docs/training.md).
This writes the same architecture at the next sizes of the family: the bundled model's config with
the shape changed, random weights in bf16, and the bundled tokenizer and chat template, so the
trainer loads it as any local model folder. Its outputs are noise: never train or evaluate it for quality.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The published configs' shapes (HuggingFaceTB/SmolLM2-360M-Instruct and -1.7B-Instruct).
SHAPES = {
    "smollm2-360m": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                     "num_attention_heads": 15, "num_key_value_heads": 5, "head_dim": 64},
    "smollm2-1.7b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                     "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 64},
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def write_shape_model(name: str, out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from core.io import atomic_folder
    from core.model import resolve_model

    base = resolve_model(None)
    folder = out / name
    if (folder / "config.json").is_file():
        return folder
    config = AutoConfig.from_pretrained(str(base))
    for key, value in SHAPES[name].items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with atomic_folder(folder, prefix=f".tmp-{name}-") as tmp:
        model.save_pretrained(str(tmp))
        for f in TOKENIZER_FILES:
            if (base / f).is_file():
                shutil.copy2(base / f, tmp / f)
        (tmp / "shape_model.json").write_text(json.dumps({"shape_of": name, "random_weights": True, "seed": seed,
                                                          "parameters": model.num_parameters()}, indent=2) + "\n")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("--out", default=str(ROOT / "bench/out/models"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(write_shape_model(a.shape, out))


if __name__ == "__main__":
    main()
