"""The pipeline config as a typed form: every setting of core.config's models, each optional.

    settings = ConfigSettings(train={"learning_rate": 3e-4}, synthesis={"enabled": True})
    settings_overrides(settings)   # ['synthesis.enabled=true', 'train.learning_rate=0.0003']
    load_config("configs/banking77.yaml", settings_overrides(settings))

The deployment's `settings` parameter is a ConfigSettings, so Prefect's UI shows a form with
every section and field of the config, its type (numbers, switches, choices for the
Literal fields), its bounds and its description, where a list of `key.path=value` strings
showed one text box. A field left empty keeps the config file's value; a filled one
becomes one override, applied by the one loader (core.config.load_config), so a form and
`--set` validate alike and the run's config is still loaded once. The form's models are
made from the config's own (`optional_model`): a field added to the config is on the form.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, create_model

from core.config import Config

_FORMS: dict[type[BaseModel], type[BaseModel]] = {}


def _optional(annotation: Any) -> Any:
    """The annotation with every config section in it replaced by its optional form (lists of sections stay whole)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return optional_model(annotation)
    if get_origin(annotation) is Union:
        return Union[tuple(_optional(a) for a in get_args(annotation))]
    return annotation


def optional_model(model: type[BaseModel]) -> type[BaseModel]:
    """A model with `model`'s fields (types, bounds, descriptions), each optional and None by default, sections
    nested the same way; unknown keys are refused, as the config refuses them."""
    if model not in _FORMS:
        fields = {}
        for name, info in model.model_fields.items():
            inner = _optional(info.annotation)
            if info.metadata:  # bounds (gt, le, pattern, ...) stay on the value, which may also be left empty
                inner = Annotated[(inner, *info.metadata)]
            fields[name] = (Optional[inner], Field(None, description=info.description, title=info.title))
        _FORMS[model] = create_model(f"{model.__name__}Settings", __config__=ConfigDict(extra="forbid", frozen=True),
                                     __doc__=model.__doc__, **fields)
    return _FORMS[model]


ConfigSettings = optional_model(Config)


def settings_overrides(settings: BaseModel | dict | None) -> list[str]:
    """The filled fields of a settings form (a ConfigSettings, or its dict) as `key.path=value` overrides (values as
    JSON, which the loader reads as YAML)."""
    if settings is None:
        return []
    if not isinstance(settings, BaseModel):
        settings = ConfigSettings.model_validate(settings)
    data = settings.model_dump(mode="json", exclude_none=True)
    out: list[str] = []

    def walk(node: dict, prefix: str) -> None:
        for key, value in sorted(node.items()):
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif value is not None:
                out.append(f"{prefix}{key}={json.dumps(value)}")

    walk(data, "")
    return out
