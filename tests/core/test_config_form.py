"""The config as a typed form (core/config_form.py): the deployment's `settings` parameter."""

from __future__ import annotations

from typing import get_args

import pytest
from prefect.utilities.callables import parameter_schema
from pydantic import BaseModel, ValidationError

from core.config import Config, load_config
from core.config_form import ConfigSettings, optional_model, settings_overrides
from flows.curate_and_train import curate_and_train


def _section(annotation) -> type[BaseModel] | None:
    """The model a field holds (through Optional / Annotated on the form), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_section, get_args(annotation))), None)


def _sections(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, info in model.model_fields.items():
        out.add(prefix + name)
        if (section := _section(info.annotation)) is not None:
            out |= _sections(section, f"{prefix}{name}.")
    return out


def test_the_form_has_every_setting_of_the_config_each_optional():
    assert _sections(ConfigSettings) == _sections(Config)
    empty = ConfigSettings()
    assert settings_overrides(empty) == [] and settings_overrides(None) == []
    assert load_config("configs/banking77.yaml", settings_overrides(empty)) == load_config("configs/banking77.yaml")


def test_a_filled_form_is_the_same_config_as_the_same_overrides():
    form = ConfigSettings(train={"learning_rate": 3e-4, "method": "lora", "format": {"include_instruction": False}},
                          synthesis={"enabled": True}, clean={"max_chars": 300}, seed=7)
    assert settings_overrides(form) == ["clean.max_chars=300", "seed=7", "synthesis.enabled=true",
                                        "train.format.include_instruction=false", "train.learning_rate=0.0003",
                                        'train.method="lora"']
    assert settings_overrides(form.model_dump(exclude_none=True)) == settings_overrides(form)  # as Prefect passes it
    by_form = load_config("configs/banking77.yaml", settings_overrides(form))
    by_text = load_config("configs/banking77.yaml", ["train.learning_rate=3e-4", "train.method=lora", "seed=7",
                                                     "train.format.include_instruction=false", "synthesis.enabled=true",
                                                     "clean.max_chars=300"])
    assert by_form == by_text and by_form.train.method == "lora" and by_form.seed == 7


@pytest.mark.parametrize("bad", [{"train": {"learning_rate": -1}}, {"train": {"method": "full"}},
                                 {"train": {"lerning_rate": 1e-3}}, {"name": "Not A Name"}])
def test_the_form_refuses_what_the_config_refuses(bad):
    with pytest.raises(ValidationError):
        ConfigSettings.model_validate(bad)


def test_the_flow_parameter_is_typed_from_the_config_models():
    schema = parameter_schema(curate_and_train).model_dump()
    assert schema["properties"]["settings"]["anyOf"][0] == {"$ref": "#/definitions/ConfigSettings"}
    runner = schema["definitions"]["RunnerConfigSettings"]["properties"]
    assert runner["kind"]["anyOf"][0] == {"enum": ["local", "ray"], "type": "string"}
    assert runner["engines"]["anyOf"][0] == {"maximum": 1024, "minimum": 1, "type": "integer"}
    assert optional_model(Config) is ConfigSettings  # one form per model
