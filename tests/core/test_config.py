import os
from pathlib import Path

import pytest

from core.config import MAX_CONFIG_BYTES, Config, ConfigError, _parse_value, load_config
from tests.conftest import write_config

SHIPPED = sorted(Path("configs").glob("*.yaml"))


def test_ships_a_config_per_task():
    assert {p.stem for p in SHIPPED} >= {"banking77", "viggo"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    labels = cfg.label_set()
    assert labels, "each shipped task has a fixed class set"
    for source in cfg.data.train + cfg.data.eval:
        assert Path(source.path).exists(), source.path


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path):
    path = write_config(
        tmp_path,
        {
            "name": "Bad Name",
            "colour": "blue",
            "task": {"kind": "regression", "input_field": "text"},
            "data": {"train": []},
            "clean": {"min_chars": -1, "max_chars": "many", "pii": {"kinds": ["email", "ssn"]}},
        },
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    for key in ("name:", "colour: unknown key", "task.kind:", "task.output_field:", "data.train:", "clean.min_chars:", "clean.max_chars:", "clean.pii.kinds.1:"):
        assert key in message, (key, message)
    assert str(path) in message


def test_overrides_are_parsed_as_yaml_and_validated():
    cfg = load_config("configs/banking77.yaml", ["clean.min_chars=12", "dedupe.exact.casefold=true"])
    assert cfg.clean.min_chars == 12 and cfg.dedupe.exact.casefold is True
    with pytest.raises(ConfigError, match=r"clean: .*min_chars \(700\) must be below max_chars"):
        load_config("configs/banking77.yaml", ["clean.min_chars=700"])  # above max_chars
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config("configs/banking77.yaml", ["clean.min_chars"])


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntask: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config(path)


def test_generation_task_needs_a_class_pattern_with_a_group(tmp_path):
    path = write_config(
        tmp_path,
        {"name": "g", "task": {"kind": "generation", "input_field": "a", "output_field": "b", "class_pattern": "^[a-z]+"}, "data": {"train": [{"path": "x.csv"}]}},
    )
    with pytest.raises(ConfigError, match="capturing group"):
        load_config(path)


def test_config_can_name_no_code(tmp_path):
    # YAML tags that would construct Python objects are refused by safe_load.
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_digest_changes_with_settings():
    a = load_config("configs/banking77.yaml").digest()
    b = load_config("configs/banking77.yaml", ["clean.min_chars=9"]).digest()
    assert a != b and a == load_config("configs/banking77.yaml").digest()
    # ingest's memory settings change no row: same hash; its record bounds do change rows
    assert load_config("configs/banking77.yaml", ["ingest.max_memory_mb=512", "ingest.batch_records=10"]).digest() == a
    assert load_config("configs/banking77.yaml", ["ingest.max_field_bytes=100"]).digest() != a


def test_train_section_is_validated_and_does_not_change_the_snapshot_id():
    cfg = load_config("configs/banking77.yaml")
    assert cfg.train.enabled and cfg.train.trainer_config().lora_r == 16
    assert "enabled" not in cfg.train.trainer_config().model_dump()
    # how a model is trained on the data changes no curated row: same config hash
    assert load_config("configs/banking77.yaml", ["train.lora_r=4", "train.enabled=false"]).digest() == cfg.digest()
    with pytest.raises(ConfigError) as err:
        load_config("configs/banking77.yaml", ["train.lora_r=0", "train.optimizer=sgd", "train.max_steps=0"])
    msg = str(err.value)
    assert "train.lora_r:" in msg and "train.optimizer: unknown key" in msg


def test_paths_cannot_leave_the_project_unless_allowed():
    with pytest.raises(ConfigError) as err:
        load_config("configs/banking77.yaml", ["output.cache=/tmp/elsewhere", "task.labels_file=../../etc/passwd",
                                               "train.format.template=templates/../../x.jinja"])
    msg = str(err.value)
    assert "3 problem(s)" in msg
    for key in ("output.cache:", "task.labels_file:", "train.format.template:"):
        assert key in msg and "allow_outside_paths" in msg
    assert load_config("configs/banking77.yaml", ["output.cache=data/../data/cache"]).output.cache  # stays inside
    allowed = load_config("configs/banking77.yaml", ["output.cache=/tmp/elsewhere", "allow_outside_paths=true"])
    assert allowed.output.cache == "/tmp/elsewhere"
    assert allowed.digest() == load_config("configs/banking77.yaml").digest()  # where outputs go changes no row


def test_a_symlink_cannot_lead_a_read_out_of_the_project(tmp_path):
    """The paths are inside the project on paper; the files they name are not."""
    from core.ingest import ingest

    project, outside = tmp_path / "project", tmp_path / "outside"
    (project / "data").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.jsonl").write_text('{"text": "a secret from elsewhere", "label": "a"}\n')
    (outside / "labels.json").write_text('["a"]')
    (project / "data" / "rows.jsonl").symlink_to(outside / "secret.jsonl")
    (project / "data" / "labels.json").symlink_to(outside / "labels.json")
    raw = {"name": "t", "task": {"kind": "classification", "input_field": "text", "output_field": "label",
                                 "labels_file": "data/labels.json"},
           "data": {"train": [{"path": "data/rows.jsonl"}]}}
    config = Config.model_validate(raw)
    with pytest.raises(ConfigError, match=r"data/labels.json: leads to .*outside.*allow_outside_paths"):
        config.label_set(project)
    raw["task"] = {**raw["task"], "labels_file": None, "labels": ["a"]}
    with pytest.raises(ConfigError, match=r"data/rows.jsonl: leads to .*secret.jsonl .*outside the project folder"):
        ingest(Config.model_validate(raw), root=project)
    allowed = Config.model_validate({**raw, "allow_outside_paths": True})
    rows, _, _ = ingest(allowed, root=project)
    assert rows["input"].to_list() == ["a secret from elsewhere"]


def _project(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A project folder (the working folder, as for `curate run`) and a folder outside it."""
    project, outside = tmp_path / "project", tmp_path / "outside"
    (project / "data").mkdir(parents=True)
    outside.mkdir()
    (project / "data" / "rows.jsonl").write_text('{"text": "a message", "label": "a"}\n')
    monkeypatch.chdir(project)
    return project, outside


def _load(tmp_path, raw: dict) -> Config:
    return load_config(write_config(tmp_path, raw))


RAW = {"name": "t", "task": {"kind": "classification", "input_field": "text", "output_field": "label", "labels": ["a"]},
       "data": {"train": [{"path": "data/rows.jsonl"}]}}


def test_a_config_that_is_a_device_a_fifo_or_huge_is_refused_at_once(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # reading it would block until a writer comes
    for path, why in (("/dev/zero", "not a regular file"), (fifo, "not a regular file"), (tmp_path, "not a regular file")):
        with pytest.raises(ConfigError, match=why) as err:
            load_config(path)
        assert str(path) in str(err.value)
    big = tmp_path / "big.yaml"
    big.write_text("name: t\n" + "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=rf"{big}: .*larger than {MAX_CONFIG_BYTES}"):
        load_config(big)


def test_a_data_source_that_is_a_device_or_a_fifo_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """Hashing a link to /dev/zero never ends, and opening a FIFO blocks: both are refused by validation."""
    project, _ = _project(tmp_path, monkeypatch)
    (project / "data" / "zero.jsonl").symlink_to("/dev/zero")
    os.mkfifo(project / "data" / "pipe.jsonl")
    for name, kind in (("zero.jsonl", "character device"), ("pipe.jsonl", r"FIFO \(named pipe\)")):
        for allow in (False, True):  # a device is no data even where outside paths are allowed
            raw = {**RAW, "data": {"train": [{"path": f"data/{name}"}]}, "allow_outside_paths": allow}
            with pytest.raises(ConfigError, match=rf"data\.train\.0\.path: 'data/{name}' is a {kind}, not a regular file or folder"):
                _load(tmp_path, raw)
    (project / "data" / "labels.json").symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match=r"task\.labels_file: .*character device"):
        _load(tmp_path, {**RAW, "task": {**RAW["task"], "labels": None, "labels_file": "data/labels.json"},
                               "allow_outside_paths": True})


def test_outputs_cannot_follow_a_symlink_out_of_the_project_unless_allowed(tmp_path, monkeypatch):
    project, outside = _project(tmp_path, monkeypatch)
    (project / "data" / "shared").symlink_to(outside)  # data/shared/... is inside on paper
    raw = {**RAW, "output": {"snapshots": "data/shared/snapshots", "runs": "data/runs", "cache": "data/shared/cache/x"},
           "train": {"output_dir": "data/shared/adapters"}}
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, raw)
    message = str(err.value)
    for key in ("output.snapshots", "output.cache", "train.output_dir"):
        assert f"{key}: 'data/shared/" in message and f"leads to {outside}" in message and "allow_outside_paths" in message, message
    assert "output.runs" not in message
    # a read through the link is refused the same way, before anything is read or hashed
    (outside / "rows.jsonl").write_text('{"text": "a secret", "label": "a"}\n')
    with pytest.raises(ConfigError, match=r"data\.train\.0\.path: 'data/shared/rows.jsonl' leads to .*outside the project folder"):
        _load(tmp_path, {**RAW, "data": {"train": [{"path": "data/shared/rows.jsonl"}]}})
    allowed = _load(tmp_path, {**raw, "allow_outside_paths": True})
    assert allowed.output.snapshots == "data/shared/snapshots"


def test_a_bad_override_is_a_message(tmp_path):
    for item in ("=x", " =1", ".=1", "="):
        with pytest.raises(ConfigError, match="expected key.path=value"):
            load_config("configs/banking77.yaml", [item])


def test_an_override_is_read_with_the_bounded_yaml_loader():
    """--set values were parsed with yaml.safe_load: an alias bomb in one was expanded in full."""
    levels = ["a: &a [x,x,x,x,x,x,x,x,x,x]"] + [f"{n}: &{n} [{','.join([f'*{p}'] * 10)}]"
                                                for p, n in zip("abcdefg", "bcdefgh")]
    bomb = "{" + ", ".join(levels) + "}"  # 10^8 strings once expanded
    assert _parse_value(bomb) == bomb  # refused as YAML: it stays the text it was
    assert _parse_value("[1, 2]") == [1, 2] and _parse_value("{k: v}") == {"k": "v"}


def test_an_iterate_round_after_the_first_evaluates_the_tuned_model_alone():
    """The base model's rows are round 1's: later rounds leave them out, and nothing else of the recipe changes."""
    cfg = load_config("configs/banking77.yaml", ["train.eval_baseline_guided=true", "train.eval_shots=5"])
    later = cfg.iteration_eval()
    assert (later.train.eval_baseline, later.train.eval_baseline_guided, later.train.eval_shots) == (False, False, 0)
    assert (cfg.train.eval_baseline, cfg.train.eval_baseline_guided, cfg.train.eval_shots) == (True, True, 5)
    assert later.train.model_dump(exclude={"eval_baseline", "eval_baseline_guided", "eval_shots"}) == \
        cfg.train.model_dump(exclude={"eval_baseline", "eval_baseline_guided", "eval_shots"})
    assert later.model_dump(exclude={"train"}) == cfg.model_dump(exclude={"train"})


@pytest.mark.parametrize("method", ["ia3", "adalora"])
def test_an_adapter_served_merged_only_is_not_checked_as_a_lora_request(method):
    """vLLM serves LoRA adapters only: IA3 and AdaLoRA (LoRA in SVD form) are served merged, so an export's parity
    cannot list vllm-lora for them."""
    cfg = load_config("configs/banking77.yaml", [f"train.method={method}", "export.enabled=true",
                                                 "export.paths=[transformers, vllm, vllm-serve]"])
    assert cfg.train.method == method and "vllm-lora" not in cfg.export.paths
    with pytest.raises(ConfigError) as err:
        load_config("configs/banking77.yaml", [f"train.method={method}", "export.enabled=true"])
    assert "vllm-lora serves LoRA adapters only" in str(err.value)
    assert load_config("configs/banking77.yaml", ["train.method=lora8", "export.enabled=true"]).export.paths.count("vllm-lora") == 1
