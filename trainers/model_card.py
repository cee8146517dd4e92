"""The model card of an adapter or an export: README.md with the YAML front matter hubs read.

    write_model_card(adapter_dir, adapter_dir)                   # at the end of training (peft's stub replaced)
    write_model_card(adapter_dir, adapter_dir, report)           # again once evaluated, with its metrics
    write_model_card(export_dir, adapter_dir, report, exported=True)

Written with huggingface_hub's ModelCard and ModelCardData: the base model by its hub name
(where it has one) and its local file hashes, the snapshot the adapter was trained on, the
training recipe, the evaluation's metrics for the tuned model beside the base model
(`model-index`), the prompt format with an example prompt, how to serve it, and its intended
use and limitations. User text (labels, the instruction, paths) is escaped
(core/markdown.py): the card is rendered on a hub or in a pull request.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from core.io import write_text
from core.markdown import md_code, md_text
from core.model import DEFAULT_MODEL_HUB_ID, model_identity
from core.train_config import NO_LORA_KEYS, base_weights
from trainers.format import PromptFormat
from trainers.summary import system_rows

META_FILE = "train_meta.json"  # what training records beside the adapter (trainers.qlora)
RECIPE_KEYS = ("method", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate", "lr_scheduler",
               "epochs", "max_steps", "batch_size", "grad_accum", "max_seq_len", "packing", "seed")


def base_hub_id(base: str | Path, identity: dict | None = None) -> str | None:
    """The base model's name on the Hugging Face hub: the bundled model's, or one its config.json
    records as `org/name`; None for a model known only by a local folder. `identity`: its
    core.model.model_identity, where already read."""
    identity = model_identity(base) if identity is None else identity
    if identity.get("files") is not None:  # the bundled model, prepared from its package
        return DEFAULT_MODEL_HUB_ID
    try:
        name = json.loads((Path(base) / "config.json").read_text()).get("_name_or_path") or ""
    except (OSError, ValueError):
        return None
    return name if name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/")) else None


def model_card(adapter_dir: str | Path, report: dict | None = None, *, exported: bool = False) -> str:
    """The README.md text (front matter and body) for the adapter, or for its export (merged)."""
    adapter_dir = Path(adapter_dir)
    meta = json.loads((adapter_dir / META_FILE).read_text())
    fmt = PromptFormat.load(adapter_dir)
    task = fmt.task
    classification = task.kind == "classification"
    identity = model_identity(meta["base_model"])
    hub = base_hub_id(meta["base_model"], identity)
    unused = ("lora_r", "lora_alpha", "lora_dropout") if meta["method"] in NO_LORA_KEYS else ()  # IA3 has no rank
    recipe = {k: meta.get("config", {}).get(k) for k in RECIPE_KEYS if k in meta.get("config", {}) and k not in unused}
    results = []
    if report is not None:
        metric = "accuracy" if classification else "exact_match"
        tuned = report["systems"].get("tuned")
        if tuned is not None:
            for key in (metric, "macro_f1" if classification else "slot_f1", "format_compliance"):
                if key in tuned:
                    results.append(EvalResult(
                        task_type="text-classification" if classification else "text-generation",
                        dataset_type="curate-and-train-snapshot", dataset_name=f"{meta.get('dataset')} {meta.get('snapshot_id')}",
                        dataset_split="eval", metric_type=key, metric_value=round(float(tuned[key]), 4),
                    ))
    data = ModelCardData(
        base_model=hub,
        library_name="transformers" if exported else "peft",
        pipeline_tag="text-generation",
        tags=["curate-and-train", meta["method"], "text-classification" if classification else "structured-output"],
        model_name=f"{meta.get('dataset')}-{meta.get('snapshot_id')}-{meta['method']}",
        eval_results=results or None,
    )
    kind = "The merged model" if exported else "A LoRA adapter"
    lines = [
        f"# {md_text(meta.get('dataset'))}: {md_text(meta['method'])} on {md_text(hub or Path(meta['base_model']).name)}",
        "",
        f"{kind} trained by curate-and-train on snapshot `{md_text(meta.get('snapshot_id'))}` of "
        f"{md_text(meta.get('dataset'))} ({meta['train_rows']} train rows, {meta['val_rows']} validation rows, "
        f"{meta['global_step']} steps).",
        "",
        "## Base model",
        "",
        f"- name: {md_code(hub) if hub else 'a local model (no hub name)'}",
        f"- local folder: {md_code(meta['base_model'])}",
        f"- file hashes: {md_code(json.dumps(identity.get('files') or identity.get('config'), sort_keys=True))}",
    ]
    if exported:
        weights = base_weights(meta["method"])
        lines.append("- weights: the adapter folded into the base"
                     + (f" it was trained on, its {weights} ({meta['method']})" if weights != "base" else "") + ", safetensors")
    lines += ["", "## Training recipe", "", "| setting | value |", "|---|---|"]
    lines += [f"| {md_text(k)} | {md_text(json.dumps(v) if isinstance(v, (list, dict)) else v)} |" for k, v in recipe.items()]
    if report is not None:
        rows = system_rows(report)
        keys = [k for k in rows[0] if k != "system"] if rows else []
        lines += ["", f"## Evaluation ({report['eval_rows']} eval rows of the snapshot, greedy decoding)", "",
                  "| system | " + " | ".join(md_text(k.replace("_", " ")) for k in keys) + " |",
                  "|---|" + "---:|" * len(keys)]
        lines += ["| " + md_text(r["system"]) + " | " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    example = fmt.encode("<the user's message>").prompt
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", example)), default=0))  # longer than any run inside
    lines += [
        "", "## Prompt format", "",
        f"Chat template: {md_code(fmt.spec.template_source)}; stop token {md_code(fmt.spec.stop_token)}; "
        + (f"system prompt: {md_text(fmt.spec.system, 400)}" if fmt.spec.system else "no system prompt") + ".",
        "The tokenizer files carry this template with the system prompt put first when a conversation brings "
        "none, so a client that sends only the user's message gets the prompt the model was trained on:",
        "", fence + "text", example, fence, "",
    ]
    if classification and task.labels:
        lines += [f"Answers: one of {len(task.labels)} labels: " + ", ".join(md_code(label) for label in task.labels[:100])
                  + (" ..." if len(task.labels) > 100 else "") + ".", ""]
    lines += ["## Use", ""]
    if exported:
        lines += ["```bash", "vllm serve path/to/this/folder --host 127.0.0.1   # its own chat template and stop token",
                  "curate parity path/to/this/folder --snapshot SNAPSHOT   # every serving path against the evaluation", "```"]
    else:
        lines += ["```bash", "curate predict --adapter path/to/this/folder \"my card was stolen\"",
                  "curate export path/to/this/folder --out merged-model   # a plain model folder any stack serves", "```"]
    lines += [
        "", "## Intended use and limitations", "",
        f"For the task it was trained on ({md_text(task.kind)}"
        + (f", {len(task.labels)} classes" if classification and task.labels else "")
        + "), with inputs like those of its snapshot, prompted in the format above. It was evaluated on that "
        "snapshot's eval split only; answers to other tasks or other kinds of input are not measured. "
        "Synthetic rows in its training data were written by a language model (the snapshot's dataset card "
        "counts them). Check its answers before acting on them.", "",
    ]
    # not ModelCard.from_template: it renders its text as a Jinja template, and labels are user text
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines)).content


def write_model_card(folder: str | Path, adapter_dir: str | Path, report: dict | None = None, *,
                     exported: bool = False) -> Path:
    """README.md in `folder`, written atomically (an adapter's card is rewritten once it is evaluated)."""
    return write_text(model_card(adapter_dir, report, exported=exported), Path(folder) / "README.md")
