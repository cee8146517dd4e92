"""Prompt templates: header, lint (syntax, variables, sandbox), sandboxed rendering, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from core.config import load_config
from flows.cli import app
from synthesis.templates import (
    TemplateProblemError,
    check_template,
    find_template,
    lint_template,
    list_template_files,
    load_template,
)

GOOD_HEADER = """{{#---
name: {name}
version: 1
job: generate
task: t
few_shot: 2
sampling: {{temperature: 0.7, max_tokens: 16}}
parse: {{kind: json, field: text, schema: {{type: object, properties: {{text: {{type: string}}}}, required: [text]}}}}
variables: {variables}
---#}}
"""


def write(tmp_path: Path, name: str, body: str, variables: str = "[label, examples]", header: str | None = None) -> Path:
    path = tmp_path / f"{name}.jinja"
    path.write_text((header if header is not None else GOOD_HEADER.format(name=name, variables=variables)) + body)
    return path


def codes(problems) -> list[str]:
    return [p.code for p in problems if p.severity == "error"]


GOOD_BODY = "Intent {{ label }}:\n{% for ex in examples %}- {{ ex.input }}\n{% endfor %}Write one."


def test_shipped_templates_lint_clean_against_their_configs():
    files = list_template_files("templates")
    assert {f.stem for f in files} >= {"banking77_new_message", "banking77_label_check", "viggo_utterance_for_mr", "viggo_dialogue_act_check"}
    for cfg_path in ("configs/banking77.yaml", "configs/banking77_imbalanced.yaml", "configs/viggo.yaml"):
        cfg = load_config(cfg_path)
        for f in files:
            tpl = load_template(f)
            if cfg.name in tpl.header.tasks:
                assert [str(p) for p in lint_template(f, config=cfg, columns=["row_id", "input", "output", "label"])] == []


def test_good_template_renders_in_sandbox(tmp_path):
    tpl = load_template(write(tmp_path, "ok", GOOD_BODY))
    text = tpl.render(label="card_arrival", examples=[{"input": "where is my card"}, {"input": "card not here"}])
    assert text == "Intent card_arrival:\n- where is my card\n- card not here\nWrite one."
    assert len(tpl.hash) == 16
    # the header is a Jinja comment: it renders to nothing
    assert "name:" not in text


def test_strict_undefined_raises_with_file_and_line(tmp_path):
    tpl = load_template(write(tmp_path, "ok", GOOD_BODY))
    with pytest.raises(TemplateProblemError) as exc:
        tpl.render(label="x")  # no examples
    (p,) = exc.value.problems
    assert p.code == "undefined" and p.file.endswith("ok.jinja") and p.line == 12


def test_syntax_error_reported_with_line(tmp_path):
    path = write(tmp_path, "broken", "line one\n{% for ex in examples %}\n{{ ex.input }\n")
    problems = lint_template(path)
    assert codes(problems) == ["syntax_error"]
    assert problems[0].line == 13 and str(problems[0]).startswith(f"{path}:13: error [syntax_error]")


def test_unknown_and_undeclared_variables(tmp_path):
    path = write(tmp_path, "vars", "{{ label }} {{ customer_name }}\n{{ output }}")
    problems = lint_template(path)
    assert sorted(codes(problems)) == ["undeclared_variable", "unknown_variable"]
    unknown = next(p for p in problems if p.code == "unknown_variable")
    assert "customer_name" in unknown.message and unknown.line == 11
    undeclared = next(p for p in problems if p.code == "undeclared_variable")
    assert "'output'" in undeclared.message and undeclared.line == 12


def test_example_fields_rows_do_not_have(tmp_path):
    path = write(tmp_path, "fields", "{{ label }}{% for ex in examples %}{{ ex.intent }}{{ ex['input'] }}{% endfor %}")
    problems = lint_template(path)
    assert codes(problems) == ["unknown_field"]
    assert "'intent'" in problems[0].message


@pytest.mark.parametrize(
    "body",
    [
        "{{ label }}{{ examples }}{{ ''.__class__.__mro__ }}",
        "{{ label }}{{ examples }}{{ cycler.__init__.__globals__ }}",
        "{{ label }}{{ examples }}{{ label['__class__'] }}",
        "{{ label }}{{ examples }}{{ label.upper.__globals__ }}",
    ],
)
def test_reaching_python_internals_is_found_statically(tmp_path, body):
    path = write(tmp_path, "evil", body)
    problems = lint_template(path)
    assert "sandbox" in codes(problems)
    assert all(p.line == 11 for p in problems if p.code == "sandbox")
    with pytest.raises(TemplateProblemError, match="sandbox"):
        check_template(load_template(path))


def test_sandbox_violation_caught_at_render_time(tmp_path):
    # Not visible statically (no underscore attribute): the immutable sandbox refuses the mutation.
    path = write(tmp_path, "mutate", "{{ label }}{{ examples.append(1) }}")
    problems = lint_template(path)
    assert codes(problems) == ["sandbox"] and "render time" in problems[0].message and problems[0].line == 11
    # and rendering directly raises the same way, never renders internals
    tpl = load_template(write(tmp_path, "cls", "{{ label }}{{ examples }}{{ label.__class__ }}"))
    with pytest.raises(TemplateProblemError) as exc:
        tpl.render(label="x", examples=[])
    assert exc.value.problems[0].code == "sandbox"


@pytest.mark.parametrize(
    "header,code,fragment",
    [
        ("no header here\n", "header", "no header"),
        ("{#---\nname: h\njob: generate\ntask: t\nparse: {kind: json}\n---#}\n", "header", "parse"),
        ("{#---\nname: h\njob: generate\ntask: t\ncolour: blue\nparse: {kind: choice, choices: labels}\n---#}\n", "header", "colour: unknown key"),
        ("{#---\nname: h\njob: generate\ntask: [t\n---#}\n", "header", "not valid YAML"),
        ("{#---\nname: other\njob: generate\ntask: t\nparse: {kind: choice, choices: labels}\n---#}\n", "header", "differs from the file name"),
        ("{#---\nname: h\njob: generate\ntask: t\nparse: {kind: regex, pattern: '(unclosed'}\n---#}\n", "header", "regular expression"),
    ],
)
def test_header_problems(tmp_path, header, code, fragment):
    path = write(tmp_path, "h", "{{ label }}", header=header)
    problems = [p for p in lint_template(path) if p.severity == "error"]
    assert any(p.code == code and fragment in p.message for p in problems), [str(p) for p in problems]


def test_header_checked_against_config(tmp_path):
    cfg = load_config("configs/viggo.yaml")
    header = GOOD_HEADER.format(name="cls", variables="[label, examples]").replace("few_shot: 2", "few_shot: 2\nclasses: [inform, gossip]")
    path = write(tmp_path, "cls", GOOD_BODY, header=header)
    problems = lint_template(path, config=cfg, columns=["row_id", "input"])
    assert sorted(codes(problems)) == ["missing_column", "task_mismatch", "unknown_class"]
    assert any("gossip" in p.message for p in problems)


def test_a_template_shared_by_several_configs_names_each(tmp_path):
    """`task` may list config names: the banking77 sample and its imbalanced split share their templates;
    a config the list does not name is still refused, and find_template picks the template for each named one."""
    header = GOOD_HEADER.format(name="shared", variables="[label, examples]").replace("task: t", "task: [alpha, beta]")
    path = write(tmp_path, "shared", GOOD_BODY, header=header)
    tpl = load_template(path)
    assert tpl.header.tasks == ("alpha", "beta") and tpl.header.matches("beta", "classification")
    assert not tpl.header.matches("gamma", "classification")
    for name in ("alpha", "beta"):
        assert find_template(tmp_path, job="generate", config_name=name, kind="classification").name == "shared"
    with pytest.raises(FileNotFoundError):
        find_template(tmp_path, job="generate", config_name="gamma", kind="classification")


def _app() -> typer.Typer:
    return app


def test_cli_lint_one_line_per_problem_and_nonzero_exit(tmp_path):
    write(tmp_path, "fine", GOOD_BODY)
    write(tmp_path, "evil", "{{ label }}{{ examples }}{{ cycler.__init__.__globals__ }}")
    write(tmp_path, "broken", "{% if label %}")
    result = CliRunner().invoke(_app(), ["templates", "lint", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ": error [" in ln]
    assert any(ln.startswith(f"{tmp_path}/broken.jinja:11: error [syntax_error]") for ln in lines)
    assert any(ln.startswith(f"{tmp_path}/evil.jinja:11: error [sandbox]") for ln in lines)
    assert not any("fine.jinja" in ln for ln in lines)


def test_cli_lint_shipped_templates_pass():
    result = CliRunner().invoke(_app(), ["templates", "lint"])
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output


def test_cli_render_prints_real_prompts():
    result = CliRunner().invoke(_app(), ["templates", "render", "viggo_utterance_for_mr", "-n", "2", "--no-chat"])
    assert result.exit_code == 0, result.output
    # per prompt: 4 few-shot turns (MR -> utterance) then the target MR as the last user turn
    assert result.output.count("[[assistant]]") == 2 * 4 and result.output.count("[[user]]") == 2 * 5
    assert "prompt 2/2" in result.output


def test_role_lines_split_the_prompt_into_chat_turns(tmp_path):
    body = "[[system]]\nBe brief.\n{% for ex in examples %}[[user]]\n{{ label }}\n[[assistant]]\n{{ ex.input }}\n{% endfor %}[[user]]\n{{ label }}"
    tpl = load_template(write(tmp_path, "turns", body))
    msgs = tpl.messages(label="x", examples=[{"input": "one"}, {"input": "two"}])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[2]["content"] == "one" and msgs[-1]["content"] == "x"
    # plain text is one user message; ending on an assistant turn is refused
    assert load_template(write(tmp_path, "plain", GOOD_BODY)).messages(label="x", examples=[]) == [{"role": "user", "content": "Intent x:\nWrite one."}]
    bad = write(tmp_path, "ends", "[[user]]\n{{ label }}{{ examples }}\n[[assistant]]\nok")
    assert "messages" in codes(lint_template(bad))


def test_bounded_renders_leave_ordinary_templates_alone(tmp_path):
    body = "{{ '-' * 20 }}|{{ labels|join(', ') }}|{{ '%5s'|format(label) }}|{{ '{:>5}'.format(label) }}|{{ label.replace('a', 'o') }}"
    tpl = load_template(write(tmp_path, "ordinary", body, variables="[label, labels]"))
    assert tpl.render(label="ab", labels=["x", "y"]) == "-" * 20 + "|x, y|   ab|   ab|ob"


@pytest.mark.parametrize("body,fragment", [
    ("{{ label * 10000000000 }}", "'*' would make"),
    ("{{ label|center(10000000000) }}", "an argument of 10000000000"),
    ("{{ '%10000000000s' % label }}", "a width or precision"),
    ("{{ range(100000)|map('string')|join(label * 100000) }}", "join would make"),
    ("{% macro grow(s, n) %}{{ grow(s ~ s, n - 1) if n else s }}{% endmacro %}{{ grow(label, 40) }}", "'~' would make about 1,048,576"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{{ label }}{% endfor %}{% endfor %}", "output passed"),
    ("{% set a = label * 1000000 %}{% set b = a ~ a %}{{ b|length }}", "'~' would make about 2,000,000"),
    ("{% set a = label * 1000000 %}{% set b = a + a %}{{ b|length }}", "'+' would make about 2,000,000"),
])
def test_a_template_cannot_exhaust_memory(tmp_path, body, fragment):
    tpl = load_template(write(tmp_path, "bomb", body, variables="[label]"))
    with pytest.raises(TemplateProblemError) as exc:
        tpl.render(label="a")
    assert exc.value.problems[0].code == "sandbox" and fragment in exc.value.problems[0].message


def test_a_template_cannot_run_forever_in_any_thread(tmp_path, monkeypatch):
    import threading
    import time

    monkeypatch.setattr("synthesis.sandbox.MAX_RENDER_SECONDS", 0.5)
    # An empty inner body touches no hook of the sandbox: the watchdog ends it ...
    spin = load_template(write(tmp_path, "spin", "{{ label }}{% set r = range(100000)|list %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
                               variables="[label]"))
    started = time.monotonic()
    with pytest.raises(TemplateProblemError, match="rendered for more than 0.5 s"):
        spin.render(label="a")
    assert time.monotonic() - started < 5
    # ... in a worker thread too, and nothing lands after a render has finished.
    calls = load_template(write(tmp_path, "calls", "{{ label }}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                                variables="[label]"))
    errors: list[Exception] = []
    worker = threading.Thread(target=lambda: errors.append(pytest.raises(TemplateProblemError, calls.render, label="a").value))
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive() and "rendered for more than 0.5 s" in str(errors[0])
    quick = load_template(write(tmp_path, "quick", "{{ label }}", variables="[label]"))
    for _ in range(2000):
        assert quick.render(label="a") == "a"
    time.sleep(1.0)  # the watchdog has ticked many times since: no stray timeout arrives


def test_a_key_given_twice_in_a_header_is_reported(tmp_path):
    header = GOOD_HEADER.format(name="twice", variables="[label]").replace("version: 1\n", "version: 1\nversion: 2\n")
    problems = lint_template(write(tmp_path, "twice", "{{ label }}", header=header))
    assert codes(problems) == ["header"] and "'version' is given twice" in problems[0].message


def test_an_anchor_bomb_in_the_header_is_a_header_problem_with_its_line(tmp_path):
    levels = "".join(f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
    header = GOOD_HEADER.format(name="laughs", variables="[label]").replace(
        "parse: {kind: json, field: text, schema: {type: object, properties: {text: {type: string}}, required: [text]}}\n",
        "parse:\n  kind: json\n  field: text\n  schema:\n    properties: {text: {type: string}}\n"
        f"    l0: &l0 [{', '.join(['lol'] * 9)}]\n{levels}")
    problems = lint_template(write(tmp_path, "laughs", "{{ label }}", header=header))
    assert codes(problems) == ["header"], problems
    assert "aliases expand this to" in problems[0].message and problems[0].line == 18  # l5, the first past the bound
