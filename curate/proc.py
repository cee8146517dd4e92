"""Running a stage's heavy work (vLLM generation, training) in a child process.

    run_module("trainers.qlora", [snapshot, "--out", run_dir], what="training", log=run_dir / "train.log")

vLLM starts its engine in a spawned process, which needs a `__main__` guard and no task
runner threads around it; training holds gigabytes that a child gives back when it ends.
The child's output goes to a log file (and is echoed on a terminal); a failure raises
with the last lines of that log, the child's own error, not a framework traceback. The
child gets SIGTERM when its parent dies (Linux PR_SET_PDEATHSIG), even by SIGKILL, so a
killed run leaves no orphan writing into a folder the re-run is about to use; a child
that runs a vLLM engine takes the engine's processes down with it (curate.engine).
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from pathlib import Path


class ChildFailed(RuntimeError):
    """A stage's child process exited non-zero; the message carries the end of its log."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the child may outlive a killed parent


def run_module(module: str, args: list[str], *, what: str, log: str | Path, tail_lines: int = 15) -> None:
    """Run `python -m module args...`, output appended to `log`; raise ChildFailed on a non-zero exit."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        done = subprocess.run([sys.executable, "-m", module, *args], stdout=fh, stderr=subprocess.STDOUT,
                              preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    if done.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        # progress bars write \r-separated updates on one line: keep the last state of each
        tail = "\n".join(line.rsplit("\r", 1)[-1] for line in lines[-tail_lines:])
        raise ChildFailed(f"{what} failed (exit {done.returncode}); end of {log}:\n{tail}")
