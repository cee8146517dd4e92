"""The `curate templates` commands (registered on the main app by flows/cli.py).

    curate templates lint [FILES...]                   # every problem, file:line, exit 1 on any error
    curate templates render banking77_new_message -n 3 # the exact prompts, from real rows
    curate templates try viggo_utterance_for_mr -n 5   # run the model: raw, parsed, label check

Exit codes: 0 fine (warnings allowed), 1 a template has errors, 2 bad arguments.
`try` starts the vLLM engine (a spawned process): it runs from the `curate` console
script, whose entry point is guarded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from core.config import ConfigError, load_config
from core.engine import make_llm
from core.model import resolve_model
from flows.cli_common import console, err, fail
from synthesis.preview import preview_requests, try_template
from synthesis.synthesize import load_frames
from synthesis.templates import TemplateProblemError, check_template, lint_template, list_template_files, load_template, read_template


def _config_for(tasks: tuple[str, ...], config: Path | None):
    """The given config, else the configs/*.yaml whose name (or kind) is one of the template's tasks."""
    try:
        if config is not None:
            return load_config(config)
        for path in sorted(Path("configs").glob("*.yaml")):
            cfg = load_config(path)
            if cfg.name in tasks:
                return cfg
        for path in sorted(Path("configs").glob("*.yaml")):
            cfg = load_config(path)
            if cfg.task.kind in tasks:
                return cfg
    except ConfigError as exc:
        fail(str(exc))
    return None


def lint(
    files: list[Path] = typer.Argument(None, help="Template files (default: every *.jinja in --dir)."),
    templates_dir: Path = typer.Option(Path("templates"), "--dir", help="Templates folder."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Check every template against this config (default: the config named by each template's task)."),
) -> None:
    """Syntax, header, variables, sandbox and render-time checks; one line per problem."""
    paths = list(files or list_template_files(templates_dir))
    if not paths:
        fail(f"no templates in {templates_dir}/")
    errors = warnings = 0
    for path in paths:
        tpl, _ = read_template(path)
        cfg = _config_for(tpl.header.tasks if tpl else (), config) if (tpl or config) else None
        for p in lint_template(path, config=cfg):
            if p.severity == "error":
                errors += 1
            else:
                warnings += 1
            (err if p.severity == "error" else console).print(str(p), highlight=False, markup=False, soft_wrap=True)
    console.print(f"{len(paths)} template(s): {errors} error(s), {warnings} warning(s)")
    if errors:
        raise typer.Exit(1)


def _prepare(name: str, config: Optional[Path], templates_dir: Path):
    try:
        tpl = load_template(name, templates_dir)
    except (FileNotFoundError, TemplateProblemError) as exc:
        fail(str(exc), 1 if isinstance(exc, TemplateProblemError) else 2)
    cfg = _config_for(tpl.header.tasks, config)
    if cfg is None:
        fail(f"no config for task {tpl.header.task!r}: pass --config")
    train, ev, where = load_frames(cfg)
    try:
        check_template(tpl, config=cfg, columns=train.columns)
    except TemplateProblemError as exc:
        fail(str(exc), 1)
    return tpl, cfg, train, ev, where


def render_cmd(
    name: str = typer.Argument(..., help="Template name (file stem) or path."),
    n: int = typer.Option(3, "-n", min=1, help="Prompts to render."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Task config (default: the one named by the template's task)."),
    templates_dir: Path = typer.Option(Path("templates"), "--dir", help="Templates folder."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Show the prompt after the model's chat template (what the model sees)."),
    seed: int = typer.Option(0, help="Seed of the few-shot draws."),
) -> None:
    """Print the exact prompts a template makes from real rows (latest snapshot, else the ingested sample)."""
    tpl, cfg, train, _, where = _prepare(name, config, templates_dir)
    reqs = preview_requests(tpl, cfg, train, n, seed)
    tok = None
    if chat:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(resolve_model(cfg.model.path))
    console.print(f"[bold]{escape(tpl.name)}[/] v{escape(str(tpl.header.version))} ({tpl.hash}) rows from {escape(str(where))}",
                  highlight=False)
    for i, (label, req, _) in enumerate(reqs, 1):
        text = (tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True) if tok
                else "\n".join(f"[[{m['role']}]]\n{m['content']}" for m in req.messages))
        console.rule(f"prompt {i}/{len(reqs)}  class {escape(str(label))}  seed {req.sampling['seed']}")
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        console.print(f"[dim]sampling {json.dumps(req.sampling)}  parse {req.parse.kind}[/]", highlight=False)


def try_cmd(
    name: str = typer.Argument(..., help="Template name (file stem) or path."),
    n: int = typer.Option(5, "-n", min=1, help="Prompts to run."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Task config naming the model and engine (default: the one named by the template's task)."),
    templates_dir: Path = typer.Option(Path("templates"), "--dir", help="Templates folder."),
    seed: int = typer.Option(0, help="Seed of the few-shot draws and the sampled rows."),
) -> None:
    """Run the model on n prompts: raw output, parsed result and the label-check verdict side by side."""
    tpl, cfg, train, _, _ = _prepare(name, config, templates_dir)
    results, gen = try_template(tpl, cfg, train, make_llm(cfg), n=n, seed=seed, templates_dir=templates_dir)
    table = Table(title=f"{tpl.name}: {len(results)} prompts, {gen.tokens} tokens in {gen.seconds:.1f}s", title_justify="left", show_lines=True)
    for col in ("class", "raw output", "parsed", "label check"):
        table.add_column(col, overflow="fold")
    for r in results:  # model output and class names are shown as written, never as rich markup
        parsed = Text(str(r["parsed"])) if r["parsed"] is not None else Text.assemble((r["reason"], "red"), f": {r['detail']}")
        table.add_row(Text(r["class"]), Text(r["raw"]), parsed, Text(str(r["label_check"])))
    console.print(table)


def register(app: typer.Typer) -> None:
    templates_app = typer.Typer(help="Lint, render and try the Jinja prompt templates in templates/.", no_args_is_help=True)
    templates_app.command("lint")(lint)
    templates_app.command("render")(render_cmd)
    templates_app.command("try")(try_cmd)
    app.add_typer(templates_app, name="templates")
