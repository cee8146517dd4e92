"""Running a stage's heavy work (vLLM generation, training, evaluation) in a child process.

    run_job("train", {"snapshot": ..., "model": ..., "out": ...}, config, folder=run_dir, what="training",
            log=run_dir / "train.log")      # python -m flows.child train <run_dir>/train.job.json

The child gets the run's resolved config as JSON (core.config.write_resolved), read back by
the same loader, and the job's paths in a job file beside it (flows/child.py): no setting
travels as a hand-mapped flag.

vLLM starts its engine in a spawned process, which needs a `__main__` guard and no task
runner threads around it; training holds gigabytes that a child gives back when it ends.
The child's output goes to a log file; its `curate` lines (progress with counts and an
ETA) are passed on to this process's log as they come (core.progress); a failure raises
with the last lines of that log, the child's own error, not a framework traceback. The
child asks for SIGTERM when its parent dies (Linux PR_SET_PDEATHSIG, set by the child
itself: no preexec_fn in a threaded process), even by SIGKILL, so a
killed run leaves no orphan writing into a folder the re-run is about to use; a child
that runs a vLLM engine takes the engine's processes down with it (core.engine).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from core.config import write_resolved
from core.io import write_json
from core.progress import LOGGER, PROGRESS_LOGGER, ProgressLine, parse_progress

CHILD_MODULE = "flows.child"
CHILD_LINE_FORMAT = "%(asctime)s | curate | %(message)s"
_CHILD_LINE_RE = re.compile(r"^\d\d:\d\d:\d\d \| curate \| (?P<message>.*)$")


class ChildFailed(RuntimeError):
    """A stage's child process exited non-zero; the message carries the end of its log."""


def die_with_parent(parent_pid: int) -> None:
    """In the child, first thing: SIGTERM when the parent that started it dies (Linux PR_SET_PDEATHSIG).

    Set by the child itself, not in a `preexec_fn` (between fork and exec of a threaded
    process, as a Prefect run is, only async-signal-safe calls are safe). A parent that died
    before the call is seen afterwards: the child was re-parented, and it leaves at once.
    """
    if not sys.platform.startswith("linux"):
        return  # elsewhere the child may outlive a killed parent
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent_pid:
        sys.exit(f"the run that started this {CHILD_MODULE} process (pid {parent_pid}) is gone")


def child_log_handler(stream=None) -> logging.Handler:
    """In the child: its `curate` lines on stdout, in the shape `relayed` recognizes."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter(CHILD_LINE_FORMAT, "%H:%M:%S"))
    root = logging.getLogger(LOGGER)
    root.setLevel(logging.INFO)
    root.propagate = False
    root.addHandler(handler)
    return handler


def relayed(line: str) -> str | None:
    """The message of a child's `curate` line (what its parent passes on), or None for other output."""
    m = _CHILD_LINE_RE.match(line.rstrip("\r\n").rsplit("\r", 1)[-1])
    return m["message"] if m else None


def run_job(job: str, inputs: dict, config: BaseModel, *, folder: str | Path, what: str, log: str | Path,
            tail_lines: int = 15, on_progress: Callable[[ProgressLine], None] | None = None,
            env: dict[str, str] | None = None) -> None:
    """Run `python -m flows.child JOB <folder>/JOB.job.json`: the resolved config goes to <folder>/config.json,
    the job's paths (`inputs`) into the job file; output appended to `log`. Raise ChildFailed on a non-zero exit.

    The child's `curate` lines (stage progress) are also logged here, on the `curate.progress`
    logger (the console, the run log, the Prefect task's log), and each progress line is
    handed to `on_progress` (Prefect's progress artifact). `env` adds to the child's environment."""
    folder, log = Path(folder), Path(log)
    config_file = write_resolved(config, folder / "config.json")
    job_file = write_json({"job": job, "config": str(config_file), "inputs": {k: str(v) for k, v in inputs.items()},
                           "parent_pid": os.getpid()}, folder / f"{job}.job.json")
    log.parent.mkdir(parents=True, exist_ok=True)
    progress_log = logging.getLogger(PROGRESS_LOGGER)
    with open(log, "ab") as fh:
        child = subprocess.Popen([sys.executable, "-m", CHILD_MODULE, job, str(job_file)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        for raw in child.stdout:
            fh.write(raw)
            fh.flush()
            message = relayed(raw.decode("utf-8", errors="replace"))
            if message is None:
                continue
            progress_log.info(message)
            parsed = parse_progress(message)
            if parsed is not None and on_progress is not None:
                try:
                    on_progress(parsed)
                except Exception as exc:  # noqa: BLE001 - a progress display never stops the work (or the pipe)
                    progress_log.warning("progress display failed, left off: %s: %s", type(exc).__name__, exc)
                    on_progress = None
        child.wait()
    if child.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        # progress bars write \r-separated updates on one line: keep the last state of each
        tail = "\n".join(line.rsplit("\r", 1)[-1] for line in lines[-tail_lines:])
        raise ChildFailed(f"{what} failed (exit {child.returncode}); end of {log}:\n{tail}")
