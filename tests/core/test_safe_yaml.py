"""core.safe_yaml: safe tags, unique keys, and aliases that cannot expand a small file into a huge one."""

from __future__ import annotations

import pytest
import yaml

from core.config import ConfigError, load_config
from core.safe_yaml import MAX_ALIAS_CHARS, MAX_ALIAS_NODES, load_yaml


def laughs(levels: int, width: int = 9, scalar: str = "lol") -> str:
    """The billion laughs: each level a list of `width` aliases of the level before."""
    lines = [f"l0: &l0 [{', '.join([repr(scalar)] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_anchor_bomb_is_refused_with_its_line():
    text = laughs(9)  # 9**9 = 387 million strings from 9 short lines
    with pytest.raises(yaml.YAMLError) as exc:
        load_yaml(text)
    assert "aliases" in exc.value.problem and f"{MAX_ALIAS_NODES:,}" in exc.value.problem
    assert exc.value.problem_mark.line == 5  # l5 (9**6 nodes) is the first to pass the bound


def test_a_long_string_repeated_by_aliases_is_refused():
    text = f"s: &s {'x' * 100_000}\nl: [{', '.join(['*s'] * 20)}]\n"  # 2 MB of text from 100 KB
    with pytest.raises(yaml.YAMLError) as exc:
        load_yaml(text)
    assert f"{MAX_ALIAS_CHARS:,}" in exc.value.problem and exc.value.problem_mark.line == 1


def test_a_recursive_alias_is_refused():
    with pytest.raises(yaml.YAMLError, match="contains itself"):
        load_yaml("a: &a [1, *a]\n")


def test_ordinary_anchors_and_merges_still_load():
    text = "base: &base {lr: 0.001, epochs: 3}\nrun:\n  <<: *base\n  epochs: 5\nlabels: &l [a, b]\nagain: *l\n" + laughs(3)
    data = load_yaml(text)
    assert data["run"] == {"lr": 0.001, "epochs": 5} and data["again"] == ["a", "b"]
    assert len(data["l2"]) == 9 and data["l2"][0][0] == ["lol"] * 9


def test_a_big_document_without_aliases_is_not_bounded(monkeypatch):
    monkeypatch.setattr("core.safe_yaml.MAX_ALIAS_NODES", 100)
    assert len(load_yaml("[" + ", ".join(["1"] * 500) + "]")) == 500
    with pytest.raises(yaml.YAMLError, match="more than the 100 nodes"):
        load_yaml("a: &a [" + ", ".join(["1"] * 60) + "]\nb: [*a, *a]\n")


def test_a_config_with_an_anchor_bomb_is_a_config_error(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\n" + laughs(9))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and "line 7" in str(exc.value) and "aliases" in str(exc.value)


def test_nesting_too_deep_for_the_parser_is_a_yaml_error():
    with pytest.raises(yaml.YAMLError, match="nested too deeply"):
        load_yaml("a: " + "[" * 5000 + "]" * 5000)
