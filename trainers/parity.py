"""Served = trained: the exported model answers the eval rows on every serving path as the evaluation did.

    curate parity RUN/export --snapshot banking77
    report = parity(export_dir, snapshot_dir, reference=eval_dir / "predictions.jsonl")

Each path is how people serve such a folder, and none of them is given a prompt built by us:
every one sends the user's message alone and lets the folder's own chat template and stop
token (trainers.export) make the prompt.

    transformers   AutoTokenizer.apply_chat_template + AutoModelForCausalLM.generate (greedy)
    vllm           vllm.LLM(folder).chat
    vllm-lora      vllm.LLM(the base the adapter was trained on, enable_lora).chat with a
                   LoRARequest for the adapter and the folder's chat template
    vllm-serve     `vllm serve folder` on 127.0.0.1 (core.vllm_cli), POST /v1/chat/completions over HTTP

The answers are compared with the evaluation's predictions of the tuned model (free decoding,
its predictions.jsonl), row for row, and the prompt token ids each path built with those
training used (PromptFormat.encode). The report gives each path's agreement and every row
that differs with both answers; a path fails below `min_agreement` (99.5 % by default) or
with any prompt that is not training's.
Writes parity.json and parity.md into `out_dir`.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import yaml

from core.config import EngineConfig
from core.engine import build_llm, engine_args, engine_environ
from core.markdown import md_code, md_text
from core.progress import Progress
from core.train_config import SERVING_PATHS, served_as_lora, served_lora_rank
from core.vllm_cli import COMMAND as VLLM_CLI
from trainers.evaluate import answer_budget
from trainers.export import read_export_meta
from trainers.format import PromptFormat, read_rows
from trainers.predict import adapter_rank, load_base, lora_base

PATHS = SERVING_PATHS
MIN_AGREEMENT = 0.995
SERVE_START_S = 900  # vLLM's start on a 2-core CPU: ~1-2 minutes; a loaded machine takes longer


class ParityError(RuntimeError):
    """A serving path could not be run (the server did not start, a request failed)."""


def conversation(text: str) -> list[dict]:
    """What a client sends: the user's message, nothing else."""
    return [{"role": "user", "content": text}]


def reference_predictions(path: str | Path) -> dict[str, str]:
    """{row_id: the tuned model's answer} from an evaluation's predictions.jsonl."""
    found = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if "tuned" not in row:
                raise ParityError(f"{path}: no `tuned` answers (an evaluation of the base model alone?)")
            found[row["row_id"]] = row["tuned"]
    return found


Served = tuple[str, list[int]]  # (the answer, the prompt's token ids the path built)


def answers_transformers(folder: Path, texts: Sequence[str], max_new_tokens: int, *, dtype: str = "auto",
                         batch_size: int = 16, on_done: Callable[[int], None] | None = None) -> list[Served]:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_base(folder, dtype=dtype).eval()  # a plain model folder, loaded as any base is
    device = model.device
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        enc = tokenizer.apply_chat_template([conversation(t) for t in chunk], add_generation_prompt=True, tokenize=True,
                                            padding=True, return_tensors="pt", return_dict=True).to(device)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answers = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        prompts = [[t for t, m in zip(ids, mask) if m] for ids, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist())]
        out += [(a.strip(), p) for a, p in zip(answers, prompts)]
        if on_done is not None:
            on_done(len(chunk))
    del model
    gc.collect()
    return out


def _chat(llm, texts: Sequence[str], max_new_tokens: int, on_done, **kw) -> list[Served]:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, **kw.pop("sampling", {}))
    out = []
    for start in range(0, len(texts), 96):
        chunk = texts[start:start + 96]
        out += [(o.outputs[0].text.strip(), list(o.prompt_token_ids))
                for o in llm.chat([conversation(t) for t in chunk], params, use_tqdm=False, **kw)]
        if on_done is not None:
            on_done(len(chunk))
    return out


def answers_vllm(folder: Path, texts: Sequence[str], max_new_tokens: int, *, engine_config: EngineConfig, seed: int,
                 on_done=None) -> list[Served]:
    llm = build_llm(folder, engine_config, seed=seed)
    try:
        return _chat(llm, texts, max_new_tokens, on_done)
    finally:
        del llm
        gc.collect()


def answers_vllm_lora(folder: Path, adapter: Path, texts: Sequence[str], max_new_tokens: int, *,
                      engine_config: EngineConfig, seed: int, on_done=None) -> list[Served]:
    from transformers import AutoTokenizer
    from vllm.lora.request import LoRARequest

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    with tempfile.TemporaryDirectory(prefix="curate-parity-base-") as tmp:
        base = lora_base(adapter, Path(tmp) / "base")  # a QLoRA adapter's NF4 round trip
        llm = build_llm(base, engine_config, seed=seed, enable_lora=True, max_lora_rank=served_lora_rank(adapter_rank(adapter)),
                        max_loras=1)
        try:
            return _chat(llm, texts, max_new_tokens, on_done, lora_request=LoRARequest("adapter", 1, str(adapter.resolve())),
                         chat_template=tokenizer.chat_template,
                         sampling={"stop_token_ids": [tokenizer.convert_tokens_to_ids(tokenizer.eos_token)]})
        finally:
            del llm
            gc.collect()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: dict, timeout: float = 600) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def serve_command(folder: Path, port: int, config_file: Path) -> list[str]:
    """`vllm serve` on loopback with the engine settings in a YAML file (vLLM's own --config);
    through core.vllm_cli, as the CPU build's own `vllm` script fails before it starts."""
    return [sys.executable, *VLLM_CLI, "serve", str(folder.resolve()), "--config", str(config_file), "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", "export", "--disable-uvicorn-access-log"]


def answers_vllm_serve(folder: Path, texts: Sequence[str], max_new_tokens: int, *, engine_config: EngineConfig, seed: int,
                       log_path: Path, on_done=None, concurrency: int = 8) -> list[Served]:
    args = {k: v for k, v in engine_args(folder, engine_config, seed=seed).items() if k != "model"}
    env = {**os.environ, **engine_environ(engine_config)}
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="curate-serve-") as tmp:
        config_file = Path(tmp) / "engine.yaml"
        config_file.write_text(yaml.safe_dump(args))
        with open(log_path, "w") as log:
            proc = subprocess.Popen(serve_command(folder, port, config_file), stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + SERVE_START_S
            while True:
                if proc.poll() is not None:
                    raise ParityError(f"`vllm serve` exited with {proc.returncode} before it was ready; its log: {log_path}")
                try:
                    with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise ParityError(f"`vllm serve` was not ready after {SERVE_START_S} s; its log: {log_path}")
                time.sleep(1)

            def ask(text: str) -> Served:
                reply = _post(f"{base}/v1/chat/completions", {"model": "export", "messages": conversation(text),
                                                             "temperature": 0, "max_tokens": max_new_tokens,
                                                             "return_token_ids": True})
                if on_done is not None:
                    on_done(1)
                return (reply["choices"][0]["message"]["content"] or "").strip(), list(reply.get("prompt_token_ids") or [])

            with ThreadPoolExecutor(concurrency) as pool:
                return list(pool.map(ask, texts))
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """The server and its engine processes (its own session): SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def parity(export_dir: str | Path, snapshot_dir: str | Path, *, reference: str | Path | None = None,
           paths: Sequence[str] = PATHS, min_agreement: float = MIN_AGREEMENT, max_rows: int | None = None,
           engine_config: EngineConfig | None = None, seed: int = 0, out_dir: str | Path | None = None) -> dict:
    """Answer the evaluated rows on each path, compare with the evaluation, write and return the report.

    `reference`: the evaluation's predictions.jsonl (default: the one the export recorded).
    `max_rows`: the first this many of them (sorted by row id), for a quick check.
    """
    export_dir, snapshot_dir = Path(export_dir), Path(snapshot_dir)
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        raise ValueError(f"unknown serving path(s) {unknown}; choose from {list(PATHS)}")
    meta = read_export_meta(export_dir)
    if "vllm-lora" in paths and not served_as_lora(meta["method"]):  # the export records its adapter's method
        raise ValueError(f"serving path vllm-lora: {meta['adapter']} is a {meta['method']} adapter, which vLLM "
                         "serves merged only; check the other paths")
    reference = Path(reference or meta.get("evaluation") or "")
    if not reference.is_file():
        raise ParityError(f"no evaluation predictions at {reference}: give --predictions (an evaluation's predictions.jsonl)")
    want = reference_predictions(reference)
    evaluated = [r for r in read_rows(snapshot_dir, "eval") if r["row_id"] in want]
    if len(evaluated) < len(want):
        raise ParityError(f"{reference}: {len(want) - len(evaluated)} of its rows are not in {snapshot_dir}'s eval split")
    fmt = PromptFormat.load(export_dir)
    budget = answer_budget(fmt, [r["output"] for r in evaluated], fmt.task)  # as the evaluation gave its answers
    rows = sorted(evaluated, key=lambda r: r["row_id"])[:max_rows]
    engine_config = engine_config or EngineConfig()
    out = Path(out_dir) if out_dir is not None else export_dir.with_name(export_dir.name + "-parity")
    out.mkdir(parents=True, exist_ok=True)
    texts = [r["input"] for r in rows]
    trained = {r["row_id"]: fmt.encode(r["input"]).prompt_ids for r in rows}  # the prompt training used
    results = {}
    with Progress("parity", total=len(rows) * len(paths), unit="rows") as progress:

        def done(n: int) -> None:
            progress.update(progress.done + n)

        for path in paths:
            progress.update(progress.done, system=path)
            started = time.perf_counter()
            if path == "transformers":
                got = answers_transformers(export_dir, texts, budget, dtype=engine_config.dtype, on_done=done)
            elif path == "vllm":
                got = answers_vllm(export_dir, texts, budget, engine_config=engine_config, seed=seed, on_done=done)
            elif path == "vllm-lora":
                got = answers_vllm_lora(export_dir, Path(meta["adapter"]), texts, budget, engine_config=engine_config,
                                        seed=seed, on_done=done)
            else:
                got = answers_vllm_serve(export_dir, texts, budget, engine_config=engine_config, seed=seed,
                                         log_path=out / "vllm-serve.log", on_done=done)
            differ = [{"row_id": r["row_id"], "input": r["input"], "gold": r["output"], "evaluation": want[r["row_id"]],
                       "served": answer, "prompt_as_trained": ids == trained[r["row_id"]]}
                      for r, (answer, ids) in zip(rows, got) if answer != want[r["row_id"]] or ids != trained[r["row_id"]]]
            prompts_off = [d["row_id"] for d in differ if not d["prompt_as_trained"]]
            agree = sum(answer == want[r["row_id"]] for r, (answer, _) in zip(rows, got))
            agreement = agree / max(len(rows), 1)
            results[path] = {"rows": len(rows), "agree": agree, "agreement": round(agreement, 4),
                             "prompts_not_as_trained": len(prompts_off),
                             "passed": agreement >= min_agreement and not prompts_off,
                             "seconds": round(time.perf_counter() - started, 1), "differ": differ}
            progress.log.info("parity: %s: %d of %d rows answer as evaluated (%.1f %%), %d prompts not as trained", path,
                              agree, len(rows), 100 * agreement, len(prompts_off))
    report = {"export": str(export_dir), "snapshot": str(snapshot_dir), "reference": str(reference), "rows": len(rows),
              "max_new_tokens": budget, "min_agreement": min_agreement, "passed": all(r["passed"] for r in results.values()),
              "paths": results, "files": {"json": str(out / "parity.json"), "markdown": str(out / "parity.md")}}
    (out / "parity.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "parity.md").write_text(report_markdown(report))
    return report


def report_markdown(report: dict, max_listed: int = 50) -> str:
    """The parity report for a terminal or a pull request; row text escaped (core/markdown.py)."""
    lines = [f"# Parity: {md_code(report['export'])}", "",
             f"{report['rows']} eval rows, answers compared with {md_code(report['reference'])}, prompts with "
             f"training's; a path passes at {100 * report['min_agreement']:.1f} % agreement with every prompt as trained.", "",
             "| path | agree | agreement | prompts not as trained | passed | seconds |", "|---|---:|---:|---:|---|---:|"]
    for name, r in report["paths"].items():
        lines.append(f"| {name} | {r['agree']} / {r['rows']} | {100 * r['agreement']:.1f} % | {r['prompts_not_as_trained']} "
                     f"| {'yes' if r['passed'] else '**no**'} | {r['seconds']} |")
    for name, r in report["paths"].items():
        if r["differ"]:
            lines += ["", f"## {name}: {len(r['differ'])} rows answer or are prompted otherwise", "",
                      "| row | input | evaluation | served | prompt as trained |", "|---|---|---|---|---|"]
            lines += [f"| {md_code(d['row_id'])} | {md_text(d['input'], 120)} | {md_text(d['evaluation'], 80)} "
                      f"| {md_text(d['served'], 80)} | {'yes' if d['prompt_as_trained'] else '**no**'} |"
                      for d in r["differ"][:max_listed]]
            if len(r["differ"]) > max_listed:
                lines.append(f"\n... and {len(r['differ']) - max_listed} more in parity.json")
    return "\n".join(lines) + "\n"
