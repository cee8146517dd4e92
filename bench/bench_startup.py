"""Start-up cost of the entry points, side by side with an earlier revision of the project.

    .venv/bin/python bench/bench_startup.py                       # against 9096863 (before the one-direction layout)
    .venv/bin/python bench/bench_startup.py --baseline REV --repeat 7

Times, in fresh interpreters of this venv, `curate --help` and the import of what a stage's
child process imports (flows.child now; the modules the old `python -m` entry points
imported then), median of --repeat runs, the baseline read from a `git worktree` of REV
(its files first on sys.path). Also counts which heavy libraries each entry point loads.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("prefect", "torch", "transformers", "trl", "peft", "vllm", "numba", "llvmlite", "matplotlib")

CASES = {
    # name: (code now, code at the baseline)
    "curate --help": ("from flows.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass",
                      "from curate.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass"),
    "child process imports": ("import flows.child", "import curate.synthesis, trainers.qlora, trainers.evaluate"),
}


def _run(code: str, path: Path, repeat: int) -> tuple[float, list[str]]:
    probe = f"import sys\n{code}\nprint('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    times, loaded = [], ""
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=path,
                              env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin", "COLUMNS": "100"})
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{code!r} failed in {path}:\n{done.stderr[-2000:]}")
        loaded = done.stdout.rsplit("loaded:", 1)[-1].strip()
    return statistics.median(times), [m for m in loaded.split(",") if m]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="9096863", help="git revision to compare with")
    ap.add_argument("--repeat", type=int, default=5, help="runs per case (the median is reported)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="curate-baseline-") as tmp:
        old = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.baseline], check=True,
                       capture_output=True)
        try:
            print(f"| entry point | {args.baseline} s | now s | ratio | heavy modules loaded then | now |")
            print("|---|---:|---:|---:|---|---|")
            for name, (now_code, old_code) in CASES.items():
                t_old, m_old = _run(old_code, old, args.repeat)
                t_new, m_new = _run(now_code, ROOT, args.repeat)
                print(f"| {name} | {t_old:.2f} | {t_new:.2f} | {t_new / t_old:.2f} | {', '.join(m_old) or '-'} | {', '.join(m_new) or '-'} |")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)


if __name__ == "__main__":
    main()
