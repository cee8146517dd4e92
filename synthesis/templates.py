"""Prompt templates as data: load, lint and render the Jinja files in templates/.

    curate templates lint                      # every problem, one line each, with file:line
    curate templates render banking77_new_message -n 3

One Jinja file per prompt, named for its job. Each opens with a header: YAML inside a
Jinja comment, so the file is still a plain Jinja template (the comment renders to
nothing and its `-` markers eat the whitespace around it):

    {#---
    name: banking77_new_message        # must equal the file stem
    version: 1
    job: generate                      # generate | label_check
    task: banking77                    # a config name (cfg.name) or a task kind (classification / generation)
    classes: all                       # or a list of class names this prompt serves
    few_shot: 6                        # real rows of the class drawn (seeded) into `examples`
    shots: fixed                       # label_check only: fixed | nearest (see below)
    sampling: {temperature: 0.9, top_p: 0.95, max_tokens: 64, n: 1}
    parse: {kind: json, field: text, schema: {...}}     # json | regex | choice
    variables: [label, examples]       # what the body uses; checked against what the job provides
    ---#}
    ...the prompt body...

Variables each job provides (anything else is an error before the model starts):

    generate:     label (intended class), labels (the class set), examples (few-shot rows),
                  output (the target output of the synthetic row: the label itself for
                  classification, a real output of the class, e.g. an MR, for generation),
                  instruction (task.instruction), task (config name)
    label_check:  text (the input to label), labels, examples (few-shot rows of any class),
                  instruction, task

A label check's examples are, with `shots: fixed`, the same real rows for every text
(one per class, up to few_shot; a shared prompt prefix), or with `shots: nearest` the
few_shot real rows most like each text (synthesis/nearest.py), never the rows the text
was written from, closest last. Nearest shots cost a prefill per text and let a small
model tell many classes apart.

An example row has the fields input, output, label and row_id; nothing else.

The body renders to chat messages. Without role markers it is one user message. A line
holding only `[[system]]`, `[[user]]` or `[[assistant]]` starts a message of that role,
so few-shot examples can be earlier turns (small chat models follow turns far better
than a list inside one message). The last message must be the user's: the model writes
the next assistant turn. Keep what is shared (instruction, few-shot turns) first and the
per-request part last: that order is what lets vLLM's prefix cache reuse the KV cache.

Rendering uses jinja2's ImmutableSandboxedEnvironment with StrictUndefined: a missing
variable raises instead of rendering as "", and Python internals (`''.__class__`,
`cycler.__init__.__globals__`) raise SecurityError. `lint_template` also finds those
statically, in the AST, so a bad template is reported before anything runs. Renders are
bounded in output size, time and the sizes operators and calls may build
(synthesis/sandbox.py): a template cannot exhaust memory or hang a run either.
"""

from __future__ import annotations

import hashlib
import json
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.safe_yaml import load_yaml
from synthesis.sandbox import BoundedSandbox, bounded_render

HEADER_RE = re.compile(r"\A\{#---[ \t]*\n(?P<yaml>.*?)\n[ \t]*---#\}", re.S)
SUFFIX = ".jinja"

PROVIDED: dict[str, frozenset[str]] = {
    "generate": frozenset({"label", "labels", "examples", "output", "instruction", "task"}),
    "label_check": frozenset({"text", "labels", "examples", "instruction", "task"}),
}
ROW_FIELDS = frozenset({"input", "output", "label", "row_id"})
ROW_COLUMNS_NEEDED = ("row_id", "input", "output", "label")
UNSAFE_ATTRIBUTES = (
    UNSAFE_FUNCTION_ATTRIBUTES | UNSAFE_METHOD_ATTRIBUTES | UNSAFE_GENERATOR_ATTRIBUTES
    | UNSAFE_COROUTINE_ATTRIBUTES | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES | {"mro"}
)
# jinja2's default globals that are objects with Python internals behind them; prompts need none.
DROPPED_GLOBALS = ("cycler", "joiner", "lipsum", "namespace", "dict")


class TemplateProblemError(ValueError):
    """A template cannot be used; the message lists every problem with file and line."""

    def __init__(self, problems: list["Problem"]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    code: str  # stable: syntax_error, header, undeclared_variable, unknown_variable, unknown_field, sandbox, render, ...
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity} [{self.code}] {self.message}"


# ----------------------------------------------------------------------------------------
# The header
# ----------------------------------------------------------------------------------------
class SamplingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    temperature: float = Field(0.8, ge=0, le=5)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(64, ge=1, le=4096)
    n: int = Field(1, ge=1, le=64, description="samples per prompt (they share the prompt's KV cache)")
    repetition_penalty: float = Field(1.0, gt=0, le=3)


class ParseSpec(BaseModel):
    """How the raw output becomes a value, and the structured-output constraint that makes it parse."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["json", "regex", "choice"]
    json_schema: dict | None = Field(None, alias="schema", description="json: JSON schema of the answer")
    field: str | None = Field(None, description="json: the key holding the text")
    pattern: str | None = Field(None, description="regex: the answer must fully match; group 'text' (or 1, or all) is the value")
    choices: Literal["labels"] | list[str] | None = Field(None, description="choice: 'labels' (the task's class set) or a list")

    @model_validator(mode="after")
    def _complete(self) -> "ParseSpec":
        if self.kind == "json":
            if not isinstance(self.json_schema, dict) or self.field is None:
                raise ValueError("parse kind json needs schema (a mapping) and field")
            props = self.json_schema.get("properties") or {}
            if self.field not in props:
                raise ValueError(f"parse.field {self.field!r} is not a property of parse.schema")
        elif self.kind == "regex":
            if not self.pattern:
                raise ValueError("parse kind regex needs pattern")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"parse.pattern is not a valid regular expression: {exc}") from exc
        elif self.kind == "choice" and not self.choices:
            raise ValueError("parse kind choice needs choices: labels (or a list)")
        return self


class TemplateHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$")
    version: int | str = 1
    job: Literal["generate", "label_check"]
    task: str | list[str] = Field(
        description="config name (e.g. banking77), task kind (classification / generation), or a list of config names sharing the template"
    )
    description: str = ""
    classes: Literal["all"] | list[str] = "all"
    few_shot: int = Field(4, ge=0, le=256, description="real rows drawn into `examples` (label_check: one per class up to this many)")
    shots: Literal["fixed", "nearest"] = Field(
        "fixed", description="label_check: fixed rows for every text, or the few_shot real rows nearest each text"
    )
    sampling: SamplingSpec = SamplingSpec()
    parse: ParseSpec
    variables: list[str] = Field(default_factory=list)

    @field_validator("variables")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("variables lists a name twice")
        return v

    @model_validator(mode="after")
    def _shots_for_checks(self) -> "TemplateHeader":
        if self.shots == "nearest" and self.job != "label_check":
            raise ValueError("shots: nearest is for label_check templates (generation draws from the class)")
        return self

    def serves(self, label: str) -> bool:
        return self.classes == "all" or label in self.classes

    @property
    def tasks(self) -> tuple[str, ...]:
        return (self.task,) if isinstance(self.task, str) else tuple(self.task)

    def matches(self, config_name: str, kind: str) -> bool:
        return config_name in self.tasks or kind in self.tasks


@dataclass
class PromptTemplate:
    """A loaded template: header, source, content hash and the compiled sandboxed template."""

    path: Path
    source: str
    header: TemplateHeader
    body_line: int  # first line after the header (1-based), for messages
    compiled: Any = field(repr=False)

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def hash(self) -> str:
        """sha256 of the file's bytes (header included: sampling and parse change the data)."""
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()[:16]

    def render(self, **context: Any) -> str:
        return render(self, context)

    def messages(self, **context: Any) -> list[dict]:
        return to_messages(render(self, context), file=str(self.path))


def make_env() -> BoundedSandbox:
    """The sandbox every template renders in: strict undefined, no mutation, no internals, bounded (synthesis/sandbox.py)."""
    env = BoundedSandbox(
        undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
    )
    for name in DROPPED_GLOBALS:
        env.globals.pop(name, None)
    # `tojson` is HTML-safe (' -> \u0027), which a model then imitates; prompts want plain JSON.
    env.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


_ENV = make_env()


def _split_header(source: str, file: str) -> tuple[dict | None, int, list[Problem]]:
    """The raw header mapping, the first body line, and header problems."""
    m = HEADER_RE.match(source)
    if not m:
        return None, 1, [Problem(file, 1, "header", "no header: the file must start with '{#---' ... '---#}' (YAML)")]
    body_line = source[: m.end()].count("\n") + 2
    try:
        raw = load_yaml(m.group("yaml"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark else 1  # +1 for 1-based, +1 for the '{#---' line
        return None, body_line, [Problem(file, line, "header", f"header is not valid YAML: {getattr(exc, 'problem', exc)}")]
    if not isinstance(raw, dict):
        return None, body_line, [Problem(file, 1, "header", "header must be a YAML mapping")]
    return raw, body_line, []


def _key_line(source: str, key: str) -> int | None:
    m = re.search(rf"^[ \t]*{re.escape(key)}[ \t]*:", source, re.M)
    return source[: m.start()].count("\n") + 1 if m else None


def _header(source: str, file: str) -> tuple[TemplateHeader | None, int, list[Problem]]:
    raw, body_line, problems = _split_header(source, file)
    if raw is None:
        return None, body_line, problems
    try:
        return TemplateHeader.model_validate(raw), body_line, []
    except ValidationError as exc:
        out = []
        for e in exc.errors():
            loc = [str(p) for p in e["loc"] if not isinstance(p, int)]
            key = ".".join(loc) or "(header)"
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
            line = next((ln for k in reversed(loc) if (ln := _key_line(source, k))), 1)
            out.append(Problem(file, line, "header", f"{key}: {msg}"))
        return None, body_line, out


def _compile(source: str, name: str, filename: str):
    code = _ENV.compile(source, name=name, filename=filename)
    return _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None), None)


def load_template(ref: str | Path, templates_dir: str | Path = "templates") -> PromptTemplate:
    """Load by name (file stem in templates_dir) or path; raise TemplateProblemError on any error."""
    path = resolve_template(ref, templates_dir)
    tpl, problems = read_template(path)
    errors = [p for p in problems if p.severity == "error"]
    if errors or tpl is None:
        raise TemplateProblemError(errors)
    return tpl


def resolve_template(ref: str | Path, templates_dir: str | Path = "templates") -> Path:
    p = Path(ref)
    if p.suffix == SUFFIX and p.is_file():
        return p
    cand = Path(templates_dir) / f"{ref}{SUFFIX}"
    if cand.is_file():
        return cand
    raise FileNotFoundError(f"no template {ref!r} in {templates_dir}/ (have: {', '.join(t.stem for t in list_template_files(templates_dir)) or 'none'})")


def list_template_files(templates_dir: str | Path = "templates") -> list[Path]:
    """The prompt templates directly in templates_dir (subfolders such as formats/ are not prompts)."""
    d = Path(templates_dir)
    return sorted(d.glob(f"*{SUFFIX}")) if d.is_dir() else []


def read_template(path: Path) -> tuple[PromptTemplate | None, list[Problem]]:
    file = str(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(file, None, "read", f"cannot read: {exc}")]
    header, body_line, problems = _header(source, file)
    try:
        compiled = _compile(source, path.stem, file)
    except TemplateSyntaxError as exc:
        return None, problems + [Problem(file, exc.lineno, "syntax_error", exc.message or str(exc))]
    if header is not None and header.name != path.stem:
        problems.append(Problem(file, _key_line(source, "name"), "header", f"name {header.name!r} differs from the file name {path.stem!r}"))
    if header is None:
        return None, problems
    return PromptTemplate(path, source, header, body_line, compiled), problems


# ----------------------------------------------------------------------------------------
# Static checks over the Jinja AST
# ----------------------------------------------------------------------------------------
def _names(ast: nodes.Template) -> dict[str, int]:
    """Variables read from the context (undeclared in the template) -> first line used."""
    from jinja2 import meta

    undeclared = meta.find_undeclared_variables(ast)
    first: dict[str, int] = {}
    for n in ast.find_all(nodes.Name):
        if n.ctx == "load" and n.name in undeclared and n.name not in first:
            first[n.name] = n.lineno
    return first


def _attr_of(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


def static_problems(ast: nodes.Template, header: TemplateHeader | None, file: str, source: str = "") -> list[Problem]:
    """Sandbox violations, variables the job does not provide, example fields rows lack."""
    problems: list[Problem] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        attr = _attr_of(node)
        if attr is not None and (attr.startswith("_") or attr in UNSAFE_ATTRIBUTES):
            problems.append(Problem(file, node.lineno, "sandbox", f"reaches Python internals through attribute {attr!r}: not allowed in a prompt"))
    used = _names(ast)
    for name in DROPPED_GLOBALS:
        if name in used:
            problems.append(Problem(file, used[name], "sandbox", f"uses the global {name!r}, which the sandbox does not provide"))
    if header is None:
        return problems
    provided = PROVIDED[header.job]
    declared = set(header.variables)
    for name, line in sorted(used.items(), key=lambda kv: kv[1]):
        if name in DROPPED_GLOBALS or name == "range":
            continue
        if name not in provided:
            problems.append(Problem(file, line, "unknown_variable", f"variable {name!r} is not provided to {header.job} templates (provided: {', '.join(sorted(provided))})"))
        elif name not in declared:
            problems.append(Problem(file, line, "undeclared_variable", f"variable {name!r} is used but not listed in the header's variables"))
    for name in sorted(declared - set(used)):
        if name not in provided:
            problems.append(Problem(file, _key_line(source, "variables"), "unknown_variable", f"header variable {name!r} is not provided to {header.job} templates (provided: {', '.join(sorted(provided))})"))
        else:
            problems.append(Problem(file, None, "unused_variable", f"header variable {name!r} is never used", "warning"))
    # Fields of example rows: `{% for ex in examples %}{{ ex.foo }}` -> rows have no 'foo'.
    for loop in ast.find_all(nodes.For):
        if isinstance(loop.iter, nodes.Name) and loop.iter.name == "examples" and isinstance(loop.target, nodes.Name):
            var = loop.target.name
            for part in loop.body:
                for node in part.find_all((nodes.Getattr, nodes.Getitem)):
                    attr = _attr_of(node)
                    if isinstance(node.node, nodes.Name) and node.node.name == var and attr is not None \
                            and not attr.startswith("_") and attr not in ROW_FIELDS:
                        problems.append(Problem(file, node.lineno, "unknown_field", f"example rows have no field {attr!r} (they have {', '.join(sorted(ROW_FIELDS))})"))
    return problems


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------
def _render_line(exc: BaseException, file: str) -> int | None:
    """The template line of a render-time error (jinja rewrites tracebacks onto template lines)."""
    line = getattr(exc, "lineno", None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == file:
            line = frame.lineno
    return line


def render(tpl: PromptTemplate, context: dict[str, Any]) -> str:
    """Render in the sandbox; any failure becomes a TemplateProblemError naming file and line."""
    file = str(tpl.path)
    try:
        text = bounded_render(tpl.compiled, context)
    except SecurityError as exc:
        raise TemplateProblemError([Problem(file, _render_line(exc, file), "sandbox", f"sandbox violation at render time: {exc}")]) from None
    except UndefinedError as exc:
        raise TemplateProblemError([Problem(file, _render_line(exc, file), "undefined", f"undefined at render time: {exc}")]) from None
    except TemplateError as exc:
        raise TemplateProblemError([Problem(file, _render_line(exc, file), "render", f"{type(exc).__name__}: {exc}")]) from None
    except Exception as exc:  # a filter on a bad value, a division by zero...: still the template's fault
        raise TemplateProblemError([Problem(file, _render_line(exc, file), "render", f"{type(exc).__name__}: {exc}")]) from None
    return text.strip()


ROLE_RE = re.compile(r"^[ \t]*\[\[(system|user|assistant)\]\][ \t]*$", re.M)


def to_messages(text: str, *, file: str = "<template>") -> list[dict]:
    """Split a rendered prompt on `[[role]]` lines into chat messages (none: one user message)."""
    marks = list(ROLE_RE.finditer(text))
    if not marks:
        return [{"role": "user", "content": text.strip()}]
    problems = []
    if text[: marks[0].start()].strip():
        problems.append(Problem(file, None, "messages", "text before the first [[role]] line"))
    msgs = []
    for m, nxt in zip(marks, marks[1:] + [None]):
        content = text[m.end() : nxt.start() if nxt else len(text)].strip()
        if not content:
            problems.append(Problem(file, None, "messages", f"an empty [[{m.group(1)}]] message"))
        msgs.append({"role": m.group(1), "content": content})
    if msgs and msgs[-1]["role"] != "user":
        problems.append(Problem(file, None, "messages", f"the last message is {msgs[-1]['role']!r}: it must be the user's"))
    if problems:
        raise TemplateProblemError(problems)
    return msgs


def stand_in_context(header: TemplateHeader, *, labels: list[str] | None = None, rows: list[dict] | None = None,
                     instruction: str = "Classify the text.", task: str = "task") -> dict[str, Any]:
    """A context with every variable the job provides, from real rows when given (lint, render previews)."""
    labels = labels or ["class_a", "class_b"]
    rows = rows or [
        {"row_id": f"r{i}", "input": f"example input number {i}", "output": labels[i % len(labels)], "label": labels[i % len(labels)]}
        for i in range(max(header.few_shot, 1))
    ]
    first = rows[0]
    ctx = {"labels": labels, "examples": rows[: header.few_shot], "instruction": instruction, "task": task}
    if header.job == "generate":
        ctx |= {"label": first["label"], "output": first["output"]}
    else:
        ctx |= {"text": first["input"]}
    return ctx


def lint_template(path: str | Path, *, config=None, rows: list[dict] | None = None, columns: list[str] | None = None) -> list[Problem]:
    """Every problem of one template file: syntax, header, variables, sandbox, render-time errors.

    With `config` (core.config.Config) also checks the header's task and classes against
    it; with `columns` checks the frame the rows come from has the fields examples need.
    """
    path = Path(path)
    file = str(path)
    tpl, problems = read_template(path)
    try:
        source = path.read_text(encoding="utf-8")
        ast = _ENV.parse(source, name=path.stem, filename=file)
    except (OSError, UnicodeDecodeError, TemplateSyntaxError):
        return problems  # already reported by read_template
    header = tpl.header if tpl else None
    static = static_problems(ast, header, file, source)
    problems += static
    labels = None
    if config is not None and header is not None:
        labels = config.label_set()
        if not header.matches(config.name, config.task.kind):
            problems.append(Problem(file, _key_line(source, "task"), "task_mismatch", f"task {header.task!r} is neither this config's name {config.name!r} nor its kind {config.task.kind!r}"))
        if labels is not None:
            unknown = [c for c in (header.classes if header.classes != "all" else []) if c not in labels]
            if unknown:
                problems.append(Problem(file, _key_line(source, "classes"), "unknown_class", f"classes not in the task's label set: {', '.join(unknown)}"))
            if isinstance(header.parse.choices, list):
                bad = [c for c in header.parse.choices if c not in labels]
                if bad:
                    problems.append(Problem(file, _key_line(source, "choices"), "unknown_class", f"parse.choices not in the task's label set: {', '.join(bad)}"))
    if columns is not None:
        missing = [c for c in ROW_COLUMNS_NEEDED if c not in columns]
        if missing:
            problems.append(Problem(file, None, "missing_column", f"the rows lack columns the examples need: {', '.join(missing)} (have {', '.join(columns)})"))
    # Render once with a stand-in (or real) context: catches runtime sandbox violations and undefineds.
    if tpl is not None and not any(p.code in ("sandbox", "unknown_variable", "unknown_field") for p in static):
        ctx = stand_in_context(
            tpl.header, labels=labels, rows=rows,
            instruction=config.task.instruction if config is not None else "Classify the text.",
            task=config.name if config is not None else tpl.header.tasks[0],
        )
        try:
            if not tpl.render(**ctx):
                problems.append(Problem(file, tpl.body_line, "empty_prompt", "renders to an empty prompt"))
            else:
                tpl.messages(**ctx)
        except TemplateProblemError as exc:
            problems += exc.problems
    return problems


def check_template(tpl: PromptTemplate, *, config=None, columns: list[str] | None = None, job: str | None = None) -> None:
    """Refuse before any compute: raise TemplateProblemError if lint finds an error."""
    problems = [p for p in lint_template(tpl.path, config=config, columns=columns) if p.severity == "error"]
    if job is not None and tpl.header.job != job:
        problems.append(Problem(str(tpl.path), _key_line(tpl.source, "job"), "wrong_job", f"job is {tpl.header.job!r}, needed {job!r}"))
    if problems:
        raise TemplateProblemError(problems)


def find_template(templates_dir: str | Path, *, job: str, config_name: str, kind: str) -> PromptTemplate:
    """The one template of `job` for this task: by config name first, else by task kind."""
    loaded = []
    for path in list_template_files(templates_dir):
        tpl, problems = read_template(path)
        if tpl is None:  # unusable: still refuse if its header says it is the one wanted
            header, _, _ = _header(path.read_text(encoding="utf-8"), str(path))
            if header is not None and header.job == job and header.matches(config_name, kind):
                raise TemplateProblemError([p for p in problems if p.severity == "error"])
        elif tpl.header.job == job:
            loaded.append(tpl)
    for key in (config_name, kind):
        hits = [t for t in loaded if key in t.header.tasks]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise FileNotFoundError(f"several {job} templates for task {key!r}: {', '.join(t.name for t in hits)}; name one in synthesis config")
    raise FileNotFoundError(f"no {job} template for task {config_name!r} (or kind {kind!r}) in {templates_dir}/")
