"""Real QLoRA steps on the bundled model (~32 tiny examples): files, falling loss, crash + resume, refusal."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainerCallback

from core.model import resolve_model
from core.train_config import FormatConfig, TrainConfig
from tests.trainers import make_snapshot
from trainers.evaluate import evaluate
from trainers.format import PromptFormat
from trainers.format_check import FormatViolationError
from trainers.predict import adapter_method, adapter_rank, predict
from trainers.qlora import adalora_schedule, latest_checkpoint, peak_memory_mb, read_meta, reset_peak_memory, setup, train

# Short sequences, tiny steps, a high LR so the loss visibly falls in a few steps; 1 CPU
# thread: with torch's default 2 on a quiet 2-core machine the module took twice as long
# (the fixture's 13 steps 356 s, predict + evaluate 71 s against 35 s). 4 steps: the crash
# after step 3, the resume from checkpoint-2, and a straight run are 9 steps in all.
TINY = TrainConfig(
    max_steps=4, eval_steps=2, batch_size=4, val_size=4, max_seq_len=128, learning_rate=1e-3,
    logging_steps=1, early_stopping_patience=0, cpu_threads=1, lora_dropout=0.0,
)


class CrashAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise RuntimeError("simulated crash")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Train on the tiny snapshot: crash at step 3, then resume from checkpoint-2 to step 4."""
    tmp = tmp_path_factory.mktemp("qlora")
    snap = make_snapshot(tmp / "snap")
    out = tmp / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(snap, resolve_model(None), TINY, out_dir=out, callbacks=[CrashAt(3)])
    crashed_at = latest_checkpoint(out).name
    adapter = train(snap, resolve_model(None), TINY, out_dir=out)
    straight = train(snap, resolve_model(None), TINY, out_dir=tmp / "straight")  # never interrupted
    return {"snap": snap, "out": out, "adapter": adapter, "crashed_at": crashed_at, "straight": straight}


@pytest.mark.slow
def test_qlora_trains_saves_format_and_resumes_after_a_crash(tiny_run):
    out, adapter = tiny_run["out"], tiny_run["adapter"]
    assert tiny_run["crashed_at"] == "checkpoint-2"
    ckpt = latest_checkpoint(out)
    assert (ckpt / "format.json").is_file() and (ckpt / "adapter_model.safetensors").is_file()  # a usable adapter
    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert {"format.json", "format_template.jinja", "tokenizer.json", "tokenizer_config.json", "train_meta.json"} <= names
    meta = read_meta(adapter)
    assert meta["resumed_from"].endswith("checkpoint-2") and meta["global_step"] == 4
    losses = meta["train_loss"]
    assert len(losses) == 4
    assert losses[-1] < 0.8 * sum(losses[:2]) / 2, losses  # measured: 3.44 against 0.8 x 4.86 = 3.89
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == TINY.lora_r
    assert (out / "tb").is_dir() and any((out / "tb").iterdir())
    assert json.loads((out / "run.json").read_text())["train_rows"] == 28
    assert json.loads((out / "format_report.json").read_text())["ok"]
    fmt = PromptFormat.load(adapter)
    assert fmt.spec.stop_token == "<|im_end|>" and "intent" in fmt.spec.system


@pytest.mark.slow
def test_resumed_run_matches_an_uninterrupted_one(tiny_run):
    """Resume restores weights, optimizer, schedule, RNG and data position: the same run, up to CPU
    rounding: not bit-identical on the CPU (measured with 6 steps: losses within 0.6 %, LoRA weights
    within 6 % of their largest value after 4 more steps at lr 1e-3)."""
    import torch
    from safetensors.torch import load_file

    resumed, straight = read_meta(tiny_run["adapter"]), read_meta(tiny_run["straight"])
    assert straight["resumed_from"] is None and straight["global_step"] == resumed["global_step"] == 4
    assert resumed["train_loss"][:2] == straight["train_loss"][:2]  # before the crash: the same run
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=2e-2)
    a = load_file(str(tiny_run["adapter"] / "adapter_model.safetensors"))
    b = load_file(str(tiny_run["straight"] / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= 0.1 * max(b[k].float().abs().max().item() for k in b), worst
    assert any(torch.count_nonzero(b[k]) for k in b if "lora_B" in k)  # trained: B starts at zero


@pytest.mark.slow
def test_predict_and_evaluate_read_the_format_from_the_adapter(tiny_run):
    adapter, snap = tiny_run["adapter"], tiny_run["snap"]
    fmt = PromptFormat.load(adapter)
    answers = predict(adapter, ["my pin is blocked", "where is my new card?"], max_new_tokens=12)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    rep = evaluate(adapter, snap, engine="transformers", shots=2, max_new_tokens=12)
    assert set(rep["systems"]) == {"tuned", "base zero-shot", "base 2-shot"}
    for m in rep["systems"].values():
        assert m["n"] == 8 and 0 <= m["accuracy"] <= 1 and 0 <= m["format_compliance"] <= 1
    # the base model sees the label list, the tuned one does not need it; few-shot adds turns
    assert rep["systems"]["base zero-shot"]["prompt_tokens_mean"] > rep["systems"]["tuned"]["prompt_tokens_mean"]
    assert rep["systems"]["base 2-shot"]["prompt_tokens_mean"] > rep["systems"]["base zero-shot"]["prompt_tokens_mean"]
    for name in ("report.json", "report.md", "confusion.png", "predictions.jsonl"):
        assert (adapter / name).is_file(), name
    assert "| tuned |" in (adapter / "report.md").read_text()
    assert fmt.stop_id == fmt.tokenizer.eos_token_id
    # predict (what `curate predict --adapter` calls) gives the evaluation's answers for the same rows
    import polars as pl

    inputs = dict(pl.read_parquet(snap / "eval.parquet").select("row_id", "input").iter_rows())
    evaluated = [json.loads(line) for line in (adapter / "predictions.jsonl").read_text().splitlines()]
    assert predict(adapter, [inputs[p["row_id"]] for p in evaluated], max_new_tokens=12) == [p["tuned"] for p in evaluated]


@pytest.mark.slow
def test_vllm_serves_the_adapter_with_a_lora_request(tiny_run):
    """The vLLM path (its own process: vLLM spawns its engine) answers like transformers, greedy."""
    adapter = tiny_run["adapter"]
    inputs = ["my pin is blocked", "where is my new card?", "I lost my phone", "can I get a visa card?"]
    proc = subprocess.run([sys.executable, "-m", "curate", "predict", "--vllm", "--adapter", str(adapter),
                           "--max-new-tokens", "12", *inputs], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if "\t" in l]
    vllm_answers = [l.split("\t", 1)[0] for l in lines]
    assert len(vllm_answers) == 4
    hf_answers = predict(adapter, inputs, max_new_tokens=12)
    # bf16 kernels differ between the engines; greedy answers agree on (almost) every input
    assert sum(a == b for a, b in zip(vllm_answers, hf_answers)) >= 3, (vllm_answers, hf_answers)


@pytest.mark.slow
def test_merged_adapter_is_the_adapter_folded_into_the_base(tiny_run, tmp_path):
    """What `evaluate --merged` serves: a model folder whose logits are the base + adapter's."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainers.predict import adapter_base, load_model, merge_adapter

    adapter = tiny_run["adapter"]
    merged_dir = merge_adapter(adapter, tmp_path / "merged", dtype="float32")
    assert (merged_dir / "config.json").is_file() and [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temporary left
    assert merge_adapter(adapter, merged_dir) == merged_dir  # a finished folder is returned as it is
    fmt = PromptFormat.load(adapter)
    ids = torch.tensor([fmt.encode("my pin is blocked", "pin_blocked").input_ids])
    with torch.no_grad():
        want = load_model(adapter, dtype="float32")(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32)(input_ids=ids).logits
        bare = load_model(None, adapter_base(adapter), dtype="float32")(input_ids=ids).logits
    scale = want.abs().max().item()
    # the merge itself, in float32: W + BA is what the adapter computes beside W
    assert (got - want).abs().max().item() <= 1e-3 * scale, (got - want).abs().max()
    # the adapter changed the model well beyond that tolerance: the match means something
    effect = (bare - want).abs().max().item()
    assert effect > 1e-2 * scale

    # As evaluation merges it: in the compute dtype of this hardware (bf16 where the CPU has bf16
    # instructions), where rounding W + BA moves the logits by a small share of the adapter's effect
    # (a bf16 merge, both read in float32: 1.46 against 24.6, 0.06 of it; compared in bf16 compute,
    # 1.09 and 2.56 in two runs, over the 5 % of the largest logit this test used to allow).
    served = merge_adapter(adapter, tmp_path / "merged-auto")
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(str(served), dtype=torch.float32)(input_ids=ids).logits
    assert (got - want).abs().max().item() <= 0.25 * effect, ((got - want).abs().max(), effect)


@pytest.mark.slow
def test_a_qlora_adapter_is_served_on_the_base_it_was_trained_on(tiny_run, tmp_path):
    """QLoRA trains its adapter on the base's NF4 round trip: predict, the merge and a LoRARequest's
    engine load that base (quantized as training does, then dequantized), not the full-precision one."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from core.devices import torch_dtype
    from trainers.predict import adapter_base, adapter_method, load_base, load_model, lora_base
    from trainers.qlora import quantization_config

    adapter = tiny_run["adapter"]
    base = adapter_base(adapter)
    assert adapter_method(adapter) == "qlora"
    dtype = torch_dtype("auto", device="cpu")
    fmt = PromptFormat.load(adapter)
    ids = torch.tensor([fmt.encode("my pin is blocked", "pin_blocked").input_ids])
    with torch.no_grad():
        # the model training optimized: 4-bit layers (bitsandbytes) under the adapter
        four_bit = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype, quantization_config=quantization_config(dtype))
        trained = PeftModel.from_pretrained(four_bit, str(adapter)).eval()(input_ids=ids).logits.float()
        served = load_model(adapter)(input_ids=ids).logits.float()
        on_full_base = PeftModel.from_pretrained(load_base(base), str(adapter)).eval()(input_ids=ids).logits.float()
    off, mismatch = (served - trained).abs().max().item(), (on_full_base - trained).abs().max().item()
    assert mismatch > 1e-2 * trained.abs().max().item()  # the quantization error shows in the logits
    assert off <= 0.1 * mismatch, (off, mismatch)

    # a LoRARequest's engine gets the same base as a plain model folder (no 4-bit config left in it)
    folder = lora_base(adapter, tmp_path / "trained-base")
    assert folder == tmp_path / "trained-base" and [p.name for p in tmp_path.iterdir()] == ["trained-base"]
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    name = "model.layers.0.mlp.down_proj.weight"
    round_trip = dict(load_base(base, method="qlora").named_parameters())[name]
    full = dict(load_base(base).named_parameters())[name]
    assert torch.equal(weights[name], round_trip.detach()) and not torch.equal(weights[name], full.detach())
    # a LoRA adapter's base is the base itself: nothing is written
    lora_adapter = tmp_path / "lora-adapter"
    lora_adapter.mkdir()
    (lora_adapter / "train_meta.json").write_text(json.dumps({"base_model": str(base), "method": "lora"}))
    assert lora_base(lora_adapter, tmp_path / "unused") == base and not (tmp_path / "unused").exists()


@pytest.mark.slow
def test_qlora_in_bf16_keeps_the_frozen_embedding_in_bf16_and_trains(tmp_path):
    """peft's k-bit preparation casts every weight that is not 4-bit to float32: the frozen, tied
    embedding goes back to the compute dtype (half its memory), the norms stay float32, and the
    trainer's step (TRL's head on labelled positions) runs on it."""

    import torch

    from trainers.qlora import fit

    cfg = TINY.model_copy(update={"dtype": "bfloat16", "max_steps": 1, "batch_size": 1, "max_seq_len": 64,
                                  "val_size": 0, "eval_steps": 10**6, "gradient_checkpointing": False})
    run = setup(make_snapshot(tmp_path / "snap", per_label=2), resolve_model(None), cfg, out_dir=tmp_path / "run")
    model = run.model
    embedding = model.get_input_embeddings().weight
    assert embedding.dtype == torch.bfloat16 and not embedding.requires_grad
    assert model.get_output_embeddings().weight is embedding  # still tied
    norms = [p for n, p in model.named_parameters() if n.endswith("norm.weight")]
    assert norms and all(p.dtype == torch.float32 for p in norms)
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    fit(run, resume=False)
    losses = [h["loss"] for h in run.trainer.state.log_history if "loss" in h]
    assert len(losses) == 1 and math.isfinite(losses[0]) and losses[0] > 0


def test_training_refuses_on_format_violations_before_loading_the_model(tmp_path):
    snap = make_snapshot(tmp_path / "snap")
    bad = tmp_path / "no_eot.jinja"
    bad.write_text(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
        "{% if m['role'] != 'assistant' %}{{ '<|im_end|>\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    cfg = TINY.model_copy(update={"format": FormatConfig(template=str(bad))})
    with pytest.raises(FormatViolationError, match="missing_end_of_turn") as err:
        setup(snap, resolve_model(None), cfg, out_dir=tmp_path / "run", load=False)
    assert "train-pin_blocked-" in str(err.value) and "allow_format_violations" in str(err.value)
    allowed = cfg.model_copy(update={"allow_format_violations": True})
    run = setup(snap, resolve_model(None), allowed, out_dir=tmp_path / "run", load=False)
    assert run.format_report["by_check"]["missing_end_of_turn"] == 40


# A rank vLLM has no slot for (12, served as 16), trained, evaluated and served on every path: tests/trainers/test_export.py.


@pytest.mark.slow
def test_eval_diff_between_two_real_adapters_matches_their_prediction_files(tiny_run, tmp_path):
    """`curate eval-diff` of the trained adapter against its step-2 checkpoint (a usable adapter folder too)."""
    import shutil

    from trainers.eval_diff import eval_diff

    snap, adapter = tiny_run["snap"], tiny_run["adapter"]
    early = tmp_path / "early"
    shutil.copytree(tiny_run["out"] / "checkpoints" / "checkpoint-2", early)
    reports = [evaluate(folder, snap, base_model=resolve_model(None), engine="transformers", baseline=False,
                        max_new_tokens=12, out_dir=out)
               for folder, out in ((adapter, adapter.parent / "eval-diff-test"), (early, early))]
    report = eval_diff(adapter, early)
    preds = [{r["row_id"]: r for r in map(json.loads, open(rep["files"]["predictions"]))} for rep in reports]
    expected = {rid: ("right->wrong" if a["tuned"] == a["gold"] else "wrong->right" if preds[1][rid]["tuned"] == a["gold"]
                      else "changed")
                for rid, a in preds[0].items() if a["tuned"] != preds[1][rid]["tuned"]}
    assert {f["row_id"]: f["kind"] for f in report["flips"]} == expected
    assert report["rows_compared"] == 8 and "not recorded" in report["train_diff"]  # the checkpoint has no meta
    assert [report["a"]["accuracy"], report["b"]["accuracy"]] == [r["systems"]["tuned"]["accuracy"] for r in reports]


@pytest.mark.slow
def test_confidence_is_the_same_number_from_generation_and_from_the_label_trie(tiny_run, tmp_path):
    """The label distribution (the trie's batched, left-padded next-token calls) against each label's
    probability from one teacher-forced forward pass; the answers' own probabilities; calibration and the
    reliability chart; and vLLM's distribution (its own process) ranking the labels as transformers does."""
    import torch

    from tests.trainers import LABELS
    from trainers.format import read_rows
    from trainers.predict import adapter_base, load_model

    adapter, snap = tiny_run["adapter"], tiny_run["snap"]
    rep = evaluate(adapter, snap, engine="transformers", baseline=False, max_new_tokens=12, out_dir=tmp_path / "hf",
                   label_probs=True)
    rows = {r["row_id"]: r for r in map(json.loads, (tmp_path / "hf" / "predictions.jsonl").read_text().splitlines())}
    fmt, model = PromptFormat.load(adapter), load_model(adapter, adapter_base(adapter))
    for row in read_rows(snap, "eval"):
        r = rows[row["row_id"]]
        assert set(r["label_probs"]) <= set(LABELS) and sum(r["label_probs"].values()) == pytest.approx(1, abs=1e-4)
        assert 0 < r["label_mass"] <= 1 + 1e-6 and 0 <= r["confidence"]["tuned"] <= 1
        for label, p in r["label_probs"].items():  # P(label's completion | prompt), teacher-forced
            enc = fmt.encode(row["input"], label)
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([enc.input_ids])).logits[0].float(), -1)
            start = len(enc.prompt_ids)
            forced = sum(float(logp[k - 1, enc.input_ids[k]]) for k in range(start, len(enc.input_ids)))
            # bf16 compute: a prefix's forward pass and the whole sequence's round differently, by up to ~1 %
            # of the log-probability (measured: -20.17 against -20.40, unpadded too); a wrong token is off by units
            assert math.log(p * r["label_mass"]) == pytest.approx(forced, abs=0.1 + 0.02 * abs(forced)), (row["row_id"], label)
    cal = rep["calibration"]
    assert set(cal) == {"tuned", "tuned, label distribution"} and all(0 <= c["ece"] <= 1 and c["n"] == 8 for c in cal.values())
    assert sum(b["rows"] for b in cal["tuned"]["bins"]) == 8
    assert (tmp_path / "hf" / "reliability.png").stat().st_size > 10_000
    assert set(rep["per_class_confidence"]) == set(LABELS)

    # vLLM (its own process): the adapter as a LoRA request on the base it was trained on. The merged weights'
    # distribution is evaluation's default, run by tests/flows/test_iterate.py
    proc = subprocess.run([sys.executable, "-m", "curate", "eval", "--adapter", str(adapter), "--no-baseline",
                           "--no-guided", "--label-probs", "--out", str(tmp_path / "vllm")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = {r["row_id"]: r for r in map(json.loads, (tmp_path / "vllm" / "predictions.jsonl").read_text().splitlines())}
    assert json.loads((tmp_path / "vllm" / "report.json").read_text())["adapter_served"] == "lora"
    # the same ranking of the labels (measured 7 of 8 rows: this 4-step adapter gives its labels ~1e-9, near ties).
    # Guided choice is no check of it: it picks the likeliest token at each step among the allowed ones, not the
    # likeliest label (measured 3 of 8 alike here)
    top = lambda probs: max(probs, key=probs.get)  # noqa: E731
    assert len(served) == 8 and sum(top(served[k]["label_probs"]) == top(r["label_probs"]) for k, r in rows.items()) >= 6
    assert "| tuned, label distribution |" in (tmp_path / "vllm" / "report.md").read_text()


@pytest.mark.slow
def test_curate_sweep_over_the_peft_method_reports_metric_memory_and_speed(tiny_run, tmp_path):
    """`curate sweep --param method=qlora,lora,lora8,adalora,ia3`: five real trainings (LoRA on 4-bit NF4, full-precision
    and int8 bases; AdaLoRA; IA3 scaling vectors), each evaluated on the base it was trained on, with the peak memory
    and the tokens/s of its training record in one table and chart."""
    sets = sum((["--set", s] for s in ("max_steps=3", "batch_size=2", "val_size=4", "eval_steps=3", "max_seq_len=128",
                                        "cpu_threads=1", "early_stopping_patience=0", "learning_rate=1e-3")), [])
    proc = subprocess.run([sys.executable, "-m", "curate", "sweep", str(tiny_run["snap"]), "--param", "method=qlora,lora,lora8,adalora,ia3",
                           *sets, "--engine", "transformers", "--max-examples", "4", "--out", str(tmp_path / "sweep")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [p["values"] for p in res["points"]] == [{"method": m} for m in ("qlora", "lora", "lora8", "adalora", "ia3")]
    for p in res["points"]:
        meta = read_meta(p["adapter"])
        assert meta["method"] == p["values"]["method"] and meta["global_step"] == 3
        assert p["peak_memory_mb"] == meta["peak_memory_mb"] > 0
        assert p["tokens_per_s"] == pytest.approx(meta["train_tokens"] / meta["fit_seconds"], rel=0.01)
        assert 0 <= p["metrics"]["accuracy"] <= 1 and p["metrics"]["n"] == 4
    assert "| method=lora8 |" in proc.stdout and (tmp_path / "sweep" / "sweep.png").stat().st_size > 10_000
    # IA3 trains scaling vectors on peft's modules for the model (keys, values, the feed-forward input), far
    # fewer weights than LoRA's; vLLM serves it merged only, and says so before any engine starts
    ia3 = Path(res["points"][4]["adapter"])
    config = json.loads((ia3 / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3" and set(config["target_modules"]) == {"k_proj", "v_proj", "down_proj"}
    assert set(config["feedforward_modules"]) == {"down_proj"}
    assert (ia3 / "adapter_model.safetensors").stat().st_size < Path(res["points"][1]["adapter"], "adapter_model.safetensors").stat().st_size / 10
    assert adapter_method(ia3) == "ia3" and adapter_rank(ia3) == 8
    # AdaLoRA starts every matrix at rank 12 (1.5 x lora_r) and, on the schedule set from the trainer's step
    # count (3: one step, one scored, the last at the allocated ranks), allocated its budget by importance:
    # lora_r (8, the default) per matrix on average (fewer where scores tie at the threshold), unevenly
    ada = json.loads(Path(res["points"][3]["adapter"], "adapter_config.json").read_text())
    assert ada["peft_type"] == "ADALORA" and (ada["init_r"], ada["target_r"], ada["total_step"]) == (12, 8, 3)
    ranks = [sum(kept) for kept in ada["rank_pattern"].values()]
    assert len(ranks) == 30 * 7 and 7.9 * len(ranks) <= sum(ranks) <= 8 * len(ranks) and min(ranks) < max(ranks)


def test_a_training_records_its_own_peak_memory_not_its_process_s():
    """A sweep trains its points in one process: each point's peak starts at its own set-up (VmHWM reset), so a
    point after a bigger one does not inherit that one's peak."""
    reset_peak_memory("cpu")
    start = peak_memory_mb("cpu")  # what the process holds now
    big = bytearray(400 * 2**20)  # zero-filled: resident
    del big
    assert peak_memory_mb("cpu") > start + 390
    reset_peak_memory("cpu")
    assert peak_memory_mb("cpu") < start + 100


def test_the_adalora_schedule_fits_every_run_length():
    """peft accepts the schedule set at the start of training for any step count; pruning starts after the first
    step (whose gradients are all zero) and a run of three steps or more ends at the allocated ranks."""
    from peft import AdaLoraConfig

    for total in [*range(1, 60), 291, 582, 10_000]:
        schedule = adalora_schedule(total)
        AdaLoraConfig(target_r=8, init_r=12, task_type="CAUSAL_LM", **schedule)  # raises on a schedule it refuses
        assert schedule["total_step"] == total and schedule["tinit"] < total - schedule["tfinal"]
        assert schedule["tinit"] >= (1 if total >= 2 else 0)  # the first step's gradients are all zero
        assert schedule["tfinal"] >= (1 if total >= 3 else 0) and schedule["tfinal"] <= 0.3 * total + 1
