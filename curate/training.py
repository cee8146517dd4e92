"""The flow's model stages, path in and path out: format check, train, evaluate.

    run = train_run_dir(config, snapshot)     # <train.output_dir>/<name>/<snapshot id>-<method>-<key>/
    step_format_check(config_path, overrides, snapshot, model)  -> format report (raises on violations)
    step_train(config_path, overrides, snapshot, model)         -> <run>/adapter/
    step_evaluate(config_path, overrides, adapter)              -> <run>/eval-<key>/report.json

The run folder is content-addressed like the data stages' folders: its key hashes the
snapshot id, the training settings, the base model's files and the trainers' code. A
finished run (adapter/train_meta.json present) is reused as is; a killed one is resumed
by trainers.qlora from its latest complete checkpoint in the same folder. Training and
evaluation run in child processes (curate/proc.py) with their logs in the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from curate.config import Config, load_config, resolve_path
from curate.io import atomic_folder, write_json, write_text
from curate.proc import run_module
from curate.snapshot import file_sha256, source_hash

TRAIN_MODULES = ("trainers/config.py", "trainers/format.py", "trainers/qlora.py")
EVAL_MODULES = ("trainers/format.py", "trainers/evaluate.py", "trainers/predict.py", "curate/engine.py")
# Settings that change how fast a run goes, not what it learns.
_SPEED_ONLY = {"cpu_threads", "cpu_malloc_mmap_threshold", "output_dir", "logging_steps", "save_total_limit"}


def _key(parts: dict) -> str:
    from curate.pipeline import stage_key

    return stage_key(parts)[:12]


def _snapshot_id(snapshot_dir: str | Path) -> str:
    return json.loads((Path(snapshot_dir) / "manifest.json").read_text())["snapshot_id"]


def train_run_dir(config: Config, snapshot_dir: str | Path) -> Path:
    """The run folder for training this config's model on this snapshot."""
    from curate.pipeline import _model_identity

    tc = config.train.trainer_config()
    parts = {
        "snapshot": _snapshot_id(snapshot_dir),
        "train": tc.model_dump(mode="json", exclude=_SPEED_ONLY),
        "model": _model_identity(config),
        "code": source_hash(TRAIN_MODULES),
        # the prompt-format template's content, not only its path
        "format_template": file_sha256(resolve_path(tc.format.template)) if tc.format.template else None,
    }
    return resolve_path(tc.output_dir) / config.name / f"{parts['snapshot']}-{tc.method}-{_key(parts)}"


def step_format_check(config_path: str, overrides: list[str], snapshot_dir: str | Path, model_dir: str | Path) -> dict:
    """Check every train and eval row in the training format, token by token; write and return the report.

    The report carries `refusal`: the message training refuses with (null when training may start).
    """
    from curate.pipeline import CACHE_EVENTS
    from trainers.format import format_check

    config = load_config(config_path, overrides)
    tc = config.train.trainer_config()
    path = train_run_dir(config, snapshot_dir) / "format_check.json"
    if path.is_file():  # same snapshot, format settings and template, tokenizer, code (the run folder's key)
        report = json.loads(path.read_text())
        if not report["refusal"]:  # a refusal is checked again: cheap, and the user is fixing it
            CACHE_EVENTS.append(("format-check", "hit"))
            return report
    checked = format_check(snapshot_dir, model_dir, tc, config.task)
    report = {**checked.to_dict(), "refusal": None}
    if not checked.ok and not tc.allow_format_violations:
        report["refusal"] = (checked.summary(limit=5) + "\nTraining refused: fix train.format or set "
                             f"train.allow_format_violations=true. Full list: {path}")
    write_json(report, path)
    CACHE_EVENTS.append(("format-check", "computed"))
    return report


def format_markdown(report: dict) -> str:
    lines = [f"**{'ok' if report['ok'] else 'violations'}**: {report['rows']} rows checked, longest "
             f"{report['max_tokens']} tokens, mean {report['mean_tokens']}", ""]
    lines += [f"- `{k}`: {v}" for k, v in report["by_check"].items()]
    lines += [f"- {v['row_id']}: {v['check']} at token {v['position']}: inference {v['expected']!r} vs training "
              f"{v['actual']!r} ({v['detail']})" for v in report["violations"][:20]]
    return "\n".join(lines) + "\n"


def step_train(config_path: str, overrides: list[str], snapshot_dir: str | Path, model_dir: str | Path) -> Path:
    """Train (or reuse, or resume) the adapter for this snapshot; return the adapter folder."""
    from curate.pipeline import CACHE_EVENTS
    from trainers.qlora import ADAPTER_DIR, META_FILE, latest_checkpoint

    config = load_config(config_path, overrides)
    run_dir = train_run_dir(config, snapshot_dir)
    adapter = run_dir / ADAPTER_DIR
    if (adapter / META_FILE).is_file():
        CACHE_EVENTS.append(("train", "hit"))
        return adapter
    resumed = latest_checkpoint(run_dir) if run_dir.exists() else None
    requested = write_json(config.train.trainer_config().model_dump(mode="json"), run_dir / "requested_config.json")
    run_module("trainers.qlora", [str(snapshot_dir), "--model", str(model_dir), "--config", str(requested), "--out", str(run_dir)],
               what="training", log=run_dir / "train.log")
    CACHE_EVENTS.append(("train", f"resumed from {resumed.name}" if resumed else "computed"))
    return adapter


def step_evaluate(config_path: str, overrides: list[str], adapter_dir: str | Path, snapshot_dir: str | Path) -> Path:
    """Evaluate the adapter (and the base model) on the eval split; return the report folder."""
    from curate.pipeline import CACHE_EVENTS

    config = load_config(config_path, overrides)
    t = config.train
    settings = {"baseline": t.eval_baseline, "shots": t.eval_shots, "max_rows": t.eval_max_rows, "guided": t.eval_guided,
                **({"merged": True} if t.eval_merged else {}),  # absent when off: earlier evaluations keep their key
                "seed": config.seed, "code": source_hash(EVAL_MODULES),
                "adapter": json.loads((Path(adapter_dir) / "train_meta.json").read_text()).get("global_step")}
    out = Path(adapter_dir).parent / f"eval-{_key(settings)}"
    if (out / "report.json").is_file():
        CACHE_EVENTS.append(("evaluate", "hit"))
        return out
    with atomic_folder(out, prefix=".tmp-eval-") as tmp:
        args = ["--adapter", str(adapter_dir), "--snapshot", str(snapshot_dir), "--shots", str(t.eval_shots), "--out", str(tmp)]
        args += [] if t.eval_baseline else ["--no-baseline"]
        args += [] if t.eval_guided else ["--no-guided"]
        args += ["--merged"] if t.eval_merged else []
        args += ["--max-examples", str(t.eval_max_rows)] if t.eval_max_rows else []
        run_module("trainers.evaluate", args, what="evaluation", log=out.parent / "evaluate.log")
        write_json(settings, tmp / "settings.json")
        # the report names files in the temporary folder: point it at the final one
        for name in ("report.json", "report.md"):
            write_text((tmp / name).read_text().replace(str(tmp), str(out)), tmp / name)
    CACHE_EVENTS.append(("evaluate", "computed"))
    return out


def training_rows(adapter_dir: str | Path) -> list[dict]:
    """The training summary as table rows (a Prefect artifact, the CLI summary)."""
    meta = json.loads((Path(adapter_dir) / "train_meta.json").read_text())
    losses, evals = meta.get("train_loss") or [], meta.get("eval_loss") or []
    return [
        {"metric": "method", "value": meta["method"]},
        {"metric": "train rows / validation rows", "value": f"{meta['train_rows']} / {meta['val_rows']}"},
        {"metric": "steps", "value": meta["global_step"]},
        {"metric": "train loss first -> last", "value": f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "-"},
        {"metric": "validation loss (best)", "value": f"{min(evals):.3f}" if evals else "-"},
        {"metric": "resumed from", "value": Path(meta["resumed_from"]).name if meta.get("resumed_from") else "-"},
        {"metric": "fit seconds", "value": meta["fit_seconds"]},
        {"metric": "peak memory MB", "value": meta["peak_memory_mb"]},
        {"metric": "device", "value": meta["device"]},
    ]


def evaluation_rows(eval_dir: str | Path) -> list[dict]:
    """One row per evaluated system with its headline metrics."""
    report = json.loads((Path(eval_dir) / "report.json").read_text())
    keys = ("accuracy", "macro_f1", "format_compliance") if report["task_kind"] == "classification" else (
        "exact_match", "slot_f1", "parse_rate", "format_compliance")
    return [{"system": name, **{k: round(m[k], 4) for k in keys}, "n": m["n"]} for name, m in report["systems"].items()]
