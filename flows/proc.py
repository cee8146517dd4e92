"""Running a stage's heavy work (vLLM generation, training, evaluation) in a child process.

    run_job("train", {"snapshot": ..., "model": ..., "out": ...}, config, folder=run_dir, what="training",
            log=run_dir / "train.log")      # python -m flows.child train <run_dir>/train.job.json

The child gets the run's resolved config as JSON (core.config.write_resolved), read back by
the same loader, and the job's paths in a job file beside it (flows/child.py): no setting
travels as a hand-mapped flag.

vLLM starts its engine in a spawned process, which needs a `__main__` guard and no task
runner threads around it; training holds gigabytes that a child gives back when it ends.
The child's output goes to a log file (and is echoed on a terminal); a failure raises
with the last lines of that log, the child's own error, not a framework traceback. The
child gets SIGTERM when its parent dies (Linux PR_SET_PDEATHSIG), even by SIGKILL, so a
killed run leaves no orphan writing into a folder the re-run is about to use; a child
that runs a vLLM engine takes the engine's processes down with it (core.engine).
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from core.config import write_resolved
from core.io import write_json

CHILD_MODULE = "flows.child"


class ChildFailed(RuntimeError):
    """A stage's child process exited non-zero; the message carries the end of its log."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the child may outlive a killed parent


def run_job(job: str, inputs: dict, config: BaseModel, *, folder: str | Path, what: str, log: str | Path,
            tail_lines: int = 15) -> None:
    """Run `python -m flows.child JOB <folder>/JOB.job.json`: the resolved config goes to <folder>/config.json,
    the job's paths (`inputs`) into the job file; output appended to `log`. Raise ChildFailed on a non-zero exit."""
    folder, log = Path(folder), Path(log)
    config_file = write_resolved(config, folder / "config.json")
    job_file = write_json({"job": job, "config": str(config_file), "inputs": {k: str(v) for k, v in inputs.items()}},
                          folder / f"{job}.job.json")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        done = subprocess.run([sys.executable, "-m", CHILD_MODULE, job, str(job_file)], stdout=fh, stderr=subprocess.STDOUT,
                              preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    if done.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        # progress bars write \r-separated updates on one line: keep the last state of each
        tail = "\n".join(line.rsplit("\r", 1)[-1] for line in lines[-tail_lines:])
        raise ChildFailed(f"{what} failed (exit {done.returncode}); end of {log}:\n{tail}")
