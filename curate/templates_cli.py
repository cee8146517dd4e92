"""The `curate templates` commands (registered on the main app by curate/cli.py).

    curate templates lint [FILES...]                   # every problem, file:line, exit 1 on any error
    curate templates render banking77_new_message -n 3 # the exact prompts, from real rows
    curate templates try viggo_utterance_for_mr -n 5   # run the model: raw, parsed, label check

Exit codes: 0 fine (warnings allowed), 1 a template has errors, 2 bad arguments.
`try` starts the vLLM engine (a spawned process): it runs from the `curate` console
script, whose entry point is guarded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _config_for(task: str | None, config: Path | None):
    """The given config, else the configs/*.yaml whose name (or kind) is the template's task."""
    from curate.config import ConfigError, load_config

    try:
        if config is not None:
            return load_config(config)
        for path in sorted(Path("configs").glob("*.yaml")):
            cfg = load_config(path)
            if task in (cfg.name,):
                return cfg
        for path in sorted(Path("configs").glob("*.yaml")):
            cfg = load_config(path)
            if task == cfg.task.kind:
                return cfg
    except ConfigError as exc:
        _fail(str(exc))
    return None


def lint(
    files: list[Path] = typer.Argument(None, help="Template files (default: every *.jinja in --dir)."),
    templates_dir: Path = typer.Option(Path("templates"), "--dir", help="Templates folder."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Check every template against this config (default: the config named by each template's task)."),
) -> None:
    """Syntax, header, variables, sandbox and render-time checks; one line per problem."""
    from curate.templates import _load, lint_template, list_template_files

    paths = list(files or list_template_files(templates_dir))
    if not paths:
        _fail(f"no templates in {templates_dir}/")
    errors = warnings = 0
    for path in paths:
        tpl, _ = _load(path)
        cfg = _config_for(tpl.header.task if tpl else None, config) if (tpl or config) else None
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
    from curate.synthesis import load_frames
    from curate.templates import TemplateProblemError, check_template, load_template

    try:
        tpl = load_template(name, templates_dir)
    except (FileNotFoundError, TemplateProblemError) as exc:
        _fail(str(exc), 1 if isinstance(exc, TemplateProblemError) else 2)
    cfg = _config_for(tpl.header.task, config)
    if cfg is None:
        _fail(f"no config for task {tpl.header.task!r}: pass --config")
    train, ev, where = load_frames(cfg)
    try:
        check_template(tpl, config=cfg, columns=train.columns)
    except TemplateProblemError as exc:
        _fail(str(exc), 1)
    return tpl, cfg, train, ev, where


def _requests(tpl, cfg, train, n: int, seed: int):
    """n (class, request, row ids the label check must not show) triples: generation templates
    one per class (smallest classes first; their few-shot rows), label checks on real rows (the row itself)."""
    import random

    import polars as pl

    from curate.synthesis import LabelCheck, _rows_by_class, render_generation_requests, smallest_classes_plan

    labels = cfg.label_set() or sorted(set(train["label"].to_list()))
    if tpl.header.job == "generate":
        plan = smallest_classes_plan(train.filter(pl.col("label").map_elements(tpl.header.serves, return_dtype=pl.Boolean)), n, 1)
        pending = render_generation_requests(tpl, dict.fromkeys(plan["label"].to_list(), 1), _rows_by_class(train),
                                             config=cfg, labels=labels, seed=seed, attempt=1)
        return [(p.label, p.request, p.few_shot_ids) for p in pending]
    rows = random.Random(seed).sample(train.select("input", "label", "row_id").rows(), min(n, train.height))
    reqs = LabelCheck(tpl, train, config=cfg, labels=labels, seed=seed).requests([r[0] for r in rows], exclude=[[r[2]] for r in rows])
    return [(r[1], q, [r[2]]) for r, q in zip(rows, reqs)]


def render_cmd(
    name: str = typer.Argument(..., help="Template name (file stem) or path."),
    n: int = typer.Option(3, "-n", min=1, help="Prompts to render."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Task config (default: the one named by the template's task)."),
    templates_dir: Path = typer.Option(Path("templates"), "--dir"),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Show the prompt after the model's chat template (what the model sees)."),
    seed: int = typer.Option(0, help="Seed of the few-shot draws."),
) -> None:
    """Print the exact prompts a template makes from real rows (latest snapshot, else the ingested sample)."""
    import json

    tpl, cfg, train, _, where = _prepare(name, config, templates_dir)
    reqs = _requests(tpl, cfg, train, n, seed)
    tok = None
    if chat:
        from curate.model import resolve_model
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(resolve_model(cfg.model.path))
    console.print(f"[bold]{tpl.name}[/] v{tpl.header.version} ({tpl.hash}) rows from {where}", highlight=False)
    for i, (label, req, _) in enumerate(reqs, 1):
        text = (tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True) if tok
                else "\n".join(f"[[{m['role']}]]\n{m['content']}" for m in req.messages))
        console.rule(f"prompt {i}/{len(reqs)}  class {label}  seed {req.sampling['seed']}")
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        console.print(f"[dim]sampling {json.dumps(req.sampling)}  parse {req.parse.kind}[/]", highlight=False)


def try_template(tpl, cfg, train, llm, *, n: int = 5, seed: int = 0, templates_dir: str | Path = "templates") -> tuple[list[dict], object]:
    """Run n prompts of a template: per prompt the class, raw output, parsed value (or reason) and label-check verdict."""
    from curate.synthesis import LabelCheck, VLLMGenerator, parse_output, resolve_templates, synthesis_settings

    reqs = _requests(tpl, cfg, train, n, seed)
    syn = synthesis_settings(cfg)
    gen = VLLMGenerator(llm, batch_size=syn.batch_size)
    outs = gen.generate([r for _, r, _ in reqs])
    labels = cfg.label_set() or sorted(set(train["label"].to_list()))
    parsed = [parse_output(o[0], r.parse, choices=r.choices) for (_, r, _), o in zip(reqs, outs)]
    verdicts = ["" for _ in reqs]
    if tpl.header.job == "generate":
        chk = None
        try:
            _, chk = resolve_templates(cfg, syn.model_copy(update={"templates_dir": str(templates_dir), "label_check": True}))
        except FileNotFoundError as exc:
            err.print(f"no label check: {exc}", highlight=False)
        ok = [i for i, p in enumerate(parsed) if p[0] is not None]
        if chk is not None and ok:
            check = LabelCheck(chk, train, config=cfg, labels=labels, seed=seed)
            creqs = check.requests([parsed[i][0] for i in ok], exclude=[reqs[i][2] for i in ok])
            for i, (said, reason, _) in zip(ok, check.verdicts(creqs, gen.generate(creqs))):
                verdicts[i] = reason if said is None else ("agrees" if said == reqs[i][0] else f"disagrees: {said}")
    else:  # a label-check template tried on real rows: the verdict is against their real label
        verdicts = [("agrees" if p[0] == lbl else f"disagrees: {p[0]}") if p[0] is not None else "" for (lbl, _, _), p in zip(reqs, parsed)]
    results = [
        {"class": label, "raw": o[0].text, "finish_reason": o[0].finish_reason, "parsed": value, "reason": reason, "detail": detail, "label_check": verdict}
        for (label, _, _), o, (value, reason, detail), verdict in zip(reqs, outs, parsed, verdicts)
    ]
    return results, gen


def try_cmd(
    name: str = typer.Argument(..., help="Template name (file stem) or path."),
    n: int = typer.Option(5, "-n", min=1, help="Prompts to run."),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    templates_dir: Path = typer.Option(Path("templates"), "--dir"),
    seed: int = typer.Option(0),
) -> None:
    """Run the model on n prompts: raw output, parsed result and the label-check verdict side by side."""
    from curate.engine import make_llm

    tpl, cfg, train, _, _ = _prepare(name, config, templates_dir)
    results, gen = try_template(tpl, cfg, train, make_llm(cfg), n=n, seed=seed, templates_dir=templates_dir)
    table = Table(title=f"{tpl.name}: {len(results)} prompts, {gen.tokens} tokens in {gen.seconds:.1f}s", title_justify="left", show_lines=True)
    for col in ("class", "raw output", "parsed", "label check"):
        table.add_column(col, overflow="fold")
    for r in results:
        parsed = r["parsed"] if r["parsed"] is not None else f"[red]{r['reason']}[/]: {r['detail']}"
        table.add_row(r["class"], r["raw"], parsed, r["label_check"])
    console.print(table)


def register(app: typer.Typer) -> None:
    templates_app = typer.Typer(help="Lint, render and try the Jinja prompt templates in templates/.", no_args_is_help=True)
    templates_app.command("lint")(lint)
    templates_app.command("render")(render_cmd)
    templates_app.command("try")(try_cmd)
    app.add_typer(templates_app, name="templates")
