"""Two OpenMP pools on two cores: libgomp's spinning waits against passive ones, side by side.

    .venv/bin/python bench/bench_omp_wait.py            # default, then PASSIVE, each on the same two test files

The test suite runs two xdist workers on a 2-core machine, so a vLLM engine's worker and a training
often share the cores. This runs the two-Ray-engine evaluation and the Ray training test files
together (`-n 2`, a file to each worker), once with OMP_WAIT_POLICY unset (libgomp spins a waiting
thread first) and once with it PASSIVE (what tests/conftest.py sets), and prints the wall time and each
test's duration. Writes bench/out/omp_wait.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ["tests/core/test_engine_pool.py", "tests/trainers/test_ray_train.py"]


def run(policy: str | None) -> dict:
    # tests/conftest.py sets PASSIVE only where the variable is absent; an empty one stays, and libgomp
    # reads it as unset (after a one-line complaint per process)
    env = {**os.environ, "OMP_WAIT_POLICY": policy or ""}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--durations=5", *FILES], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(out.stdout[-3000:])
    durations = {m[1].split("::")[-1]: float(m[0]) for m in re.findall(r"^([0-9.]+)s call\s+(\S+)", out.stdout, re.M)}
    return {"policy": policy or "unset", "wall_s": round(wall, 1), "durations_s": durations}


def main() -> None:
    rows = [run(None), run("PASSIVE")]
    (ROOT / "bench/out").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench/out/omp_wait.json").write_text(json.dumps(rows, indent=2))
    for r in rows:
        slow = ", ".join(f"{k} {v:.0f} s" for k, v in r["durations_s"].items() if v > 1)
        print(f"OMP_WAIT_POLICY {r['policy']:>7}: {r['wall_s']:.0f} s ({slow})")
    print(f"passive / unset: {rows[1]['wall_s'] / rows[0]['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
