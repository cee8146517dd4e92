"""The `synthesis:` section of a task configuration (mounted into core.config.Config).

    synthesis:
      enabled: true
      template: banking77_new_message          # templates/banking77_new_message.jinja
      oversample: 1.5

Self-contained (extra keys are errors) so it can be validated on its own:
`SynthesisConfig.model_validate(raw["synthesis"])`. What each template generates, how
it samples and how its output is parsed live in the template's header, not here: this
section only picks templates and sets the budget loop around them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SynthesisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="make synthetic rows for the classes the balance plan says are short")
    templates_dir: str = Field("templates", description="folder of the Jinja prompt templates (relative to the project root)")
    template: str | None = Field(
        None, description="generation template name (file stem); null = the one template with job: generate whose task is this config's name"
    )
    label_check_template: str | None = Field(
        None, description="label-check template name; null = the one template with job: label_check for this task"
    )
    oversample: float = Field(
        1.5, ge=1.0, le=20.0,
        description="requests per missing row in the first round; later rounds divide by the class's observed yield (capped by max_oversample)",
    )
    max_oversample: float = Field(8.0, ge=1.0, le=100.0, description="upper bound on requests per missing row in any round")
    max_attempts: int = Field(3, ge=1, le=20, description="generation rounds per class before giving up on its budget")
    batch_size: int = Field(256, ge=1, description="prompts handed to vLLM per generate() call (vLLM batches inside it)")
    label_check: bool = Field(True, description="keep only synthetic rows the model labels as their intended class")
    seed: int = Field(0, description="base seed: few-shot draws and per-request sampling seeds derive from it")
