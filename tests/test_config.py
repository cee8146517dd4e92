from pathlib import Path

import pytest

from curate.config import ConfigError, load_config
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
