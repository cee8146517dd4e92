"""The `curate` command line: one Typer app, and every command's --help says what each argument is."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer

import core
from flows import cli_summary
from flows.cli import app
from tests.conftest import base_config, curate_steps, write_config


def _commands(group, path: tuple[str, ...] = ()):
    yield path, group
    if hasattr(group, "commands"):  # a group (typer's own click)
        for name, cmd in group.commands.items():
            yield from _commands(cmd, path + (name,))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_every_command_is_in_the_one_app():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"run", "serve", "dedupe", "diff", "format-check", "train", "eval", "predict", "sweep", "model check",
            "model prepare", "snapshots list", "snapshots show", "config check", "review approve", "review reject",
            "review show", "templates lint", "templates render", "templates try"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_each_command_and_each_of_its_arguments_and_options_is_described(path, command):
    assert (command.help or "").strip(), f"curate {' '.join(path)} has no description"
    undescribed = [p.name for p in command.params if p.name != "help" and not (getattr(p, "help", None) or "").strip()]
    assert undescribed == [], f"curate {' '.join(path)}: {undescribed}"


def test_help_and_version_through_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "curate", "format-check", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "format-check" in out.stdout and "Snapshot folder, id, or dataset name" in out.stdout
    assert "format.py" not in out.stdout  # the command's own usage, not a module's argparse
    version = subprocess.run([sys.executable, "-m", "curate", "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"curate-and-train {core.__version__}"


def test_the_run_summary_says_what_happened_where_it_is_and_what_next_with_user_text_escaped(tmp_path):
    train = tmp_path / "train.jsonl"
    rows = [{"text": f"message number {i} about [bold]things[/bold]", "label": lab}
            for i, lab in enumerate(["a", "b", "[red]c[/red]"] * 4)]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = base_config(tmp_path, [str(train)], task={"labels": ["a", "b", "[red]c[/red]"]})
    snapshot = curate_steps(write_config(tmp_path, cfg))
    record = tmp_path / "runs" / "t" / "x" / "run.json"
    record.parent.mkdir(parents=True)
    (record.parent / "run.log").write_text("")
    result = {"snapshot": str(snapshot), "record": str(record),
              "stages": [["01-ingest", "computed", 0.12], ["02-clean", "hit", 0.05], ["snapshot", "computed", 0.8]]}
    with cli_summary.console.capture() as captured:
        cli_summary.print_run(result, tmp_path / "config.yaml", 75.0)
    out = captured.get()
    assert "[red]c[/red]" in out  # a label that looks like markup prints as written
    assert "all stages" in out and "0.8" in out and "done in 1m15s" in out
    assert f"runlog:{record.parent / 'run.log'}" in "".join(out.split())  # (rich wraps long paths)
    assert "curate run --config" in out and "--train" in out  # what to run next without an adapter
