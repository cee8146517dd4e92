"""The `curate` command line: one Typer app, and every command's --help says what each argument is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def _curate(*args: str, cwd=None, timeout: int = 120) -> subprocess.CompletedProcess:
    # wide lines: a message is checked as printed, not where the console wrapped a long tmp path
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "COLUMNS": "500"})


def test_unreadable_configs_and_bad_overrides_are_messages_not_tracebacks(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):  # /dev/zero grew without bound; a FIFO blocked
        out = _curate("config", "check", path, timeout=60)
        assert out.returncode == 2 and "not a regular file" in out.stderr and "Traceback" not in out.stderr, out.stderr
    for item in ("=x", "=", ".=1"):
        out = _curate("run", "--set", item)
        assert out.returncode == 2 and f"--set '{item}': expected key.path=value" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_user_text_prints_verbatim_not_as_rich_markup(tmp_path):
    """Labels, paths and error messages holding [...] print as written (rich would swallow them as markup)."""
    from tests.core.test_diff_hostile import hostile_pair

    a, b = hostile_pair(tmp_path / "snaps")
    out_md = tmp_path / "[bold]x[/]" / "d.md"
    gated = _curate("diff", str(a), str(b), "--fail-on", "share=0", "--out-md", str(out_md))
    assert gated.returncode == 3, gated.stderr
    assert "class '[bold]x[/]' moved" in gated.stderr and f"wrote {out_md}" in gated.stderr.replace("\n", "")

    config = tmp_path / "c[bold]onfig.yaml"
    config.write_text(Path("configs/viggo.yaml").read_text())
    checked = _curate("config", "check", str(config))
    assert checked.returncode == 0 and f"{config}: valid" in checked.stdout.replace("\n", ""), checked.stdout
    missing = _curate("config", "check", str(tmp_path / "[x].yaml"))
    assert missing.returncode == 2 and f"{tmp_path / '[x].yaml'}: cannot read" in missing.stderr.replace("\n", "")

    shutil.copytree(tmp_path / "snaps" / "demo", tmp_path / "snaps" / "[red]ds")  # a folder name holds no /
    listed = _curate("snapshots", "list", "--root", str(tmp_path / "snaps"))
    assert listed.returncode == 0 and "[red]ds" in listed.stdout, listed.stdout
    star = _curate("snapshots", "show", "**", "--root", str(tmp_path / "snaps"))
    assert star.returncode == 2 and "no snapshot '**'" in star.stderr and "Traceback" not in star.stderr, star.stderr


def test_an_empty_train_split_is_warned_about_in_the_summary_and_at_the_end(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": f"message number {i}", "label": "zzz"}) + "\n" for i in range(4)))
    snapshot = curate_steps(write_config(tmp_path, base_config(tmp_path, [str(train)])))  # every label unknown: quarantined
    record = tmp_path / "runs" / "t" / "x" / "run.json"
    result = {"snapshot": str(snapshot), "record": str(record), "stages": [["snapshot", "computed", 0.1]]}
    with cli_summary.console.capture() as captured:
        cli_summary.print_run(result, tmp_path / "config.yaml", 3.0)
    out = " ".join(captured.get().split())
    assert out.count("warning: the train split is empty (4 quarantined, 0 rejected") == 2, out  # under the tables, and last
    assert out.endswith("nothing to train on.")
    with cli_summary.console.capture() as captured:
        cli_summary.print_summary(snapshot)  # curate snapshots show
    assert "warning: the train split is empty" in " ".join(captured.get().split())
