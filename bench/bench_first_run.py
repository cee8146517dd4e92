"""The first run as a new user has it: `make run` on a fresh clone, timed, then an unchanged second one.

    .venv/bin/python bench/bench_first_run.py                          # HEAD, in a fresh clone under bench/out/
    .venv/bin/python bench/bench_first_run.py --baseline 2a9b870       # and an earlier revision, same machine, same run
    .venv/bin/python bench/bench_first_run.py --rev HEAD --keep        # keep the clone (its .venv) afterwards

For each revision: `git clone` of it into a temporary folder, then `make setup model` (the
install and the model preparation, timed apart), `make run` with its output in a log file
(not a terminal: what CI and a Prefect worker see), and `make run` again. Reports each
stage's own time from the run record, the tuned and base model's metrics, how many
progress lines the log got during training and evaluation and the longest gap between two
log lines, and the CPU (model, cores, the bf16 / AMX flags). Pip's cache is shared by the
clones, so the install figure is one with warm wheels. JSON in bench/out/first-run.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    flags = set(re.search(r"^flags\s*:\s*(.*)$", info, re.M)[1].split())
    return {"model": model[1] if model else "?", "cores": os.cpu_count(), "flags": [f for f in FLAGS if f in flags]}


def _timed(cmd: list[str], cwd: Path, log: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with open(log, "wb") as fh:
        done = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "120"})
    return time.perf_counter() - started, done.returncode


def _log_gaps(log: Path, stage: str) -> tuple[int, float]:
    """Progress lines between a stage's start and end lines, and the longest gap between two `curate` lines there."""
    stamps, progress, inside = [], 0, False
    for line in log.read_text(errors="replace").splitlines():
        m = re.match(r"^(\d\d):(\d\d):(\d\d) \| (.*)$", line.rsplit("\r", 1)[-1])
        if not m:
            continue
        message = m[4]
        if message == f"{stage}: started":
            inside = True
        if inside:
            stamps.append(int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]))
            progress += bool(re.match(r"^(synthesis|training|evaluation): \d+/\d+ ", message))
        if inside and re.match(rf"^{stage}: (computed|hit|resumed|failed)", message):
            break
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return progress, float(max(gaps, default=0))


def measure(rev: str, out: Path, keep: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"first-run-{rev[:12]}-", dir=out))
    clone = work / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", rev], cwd=clone, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    result: dict = {"rev": rev, "commit": commit}
    result["install_s"], rc = _timed(["make", "setup", "model"], clone, work / "setup.log")
    if rc:
        raise SystemExit(f"{rev}: make setup model failed, see {work / 'setup.log'}")
    result["first_run_s"], rc = _timed(["make", "run"], clone, work / "run1.log")
    if rc:
        raise SystemExit(f"{rev}: make run failed, see {work / 'run1.log'}")
    result["second_run_s"], rc = _timed(["make", "run"], clone, work / "run2.log")
    records = sorted((clone / "data" / "runs").glob("*/*/run.json"))
    first = json.loads(records[0].read_text())
    result["stages"] = {s["stage"]: s.get("seconds") for s in first.get("stages", []) + first.get("model_stages", [])}
    result["second_run_caches"] = [s["cache"] for s in json.loads(records[-1].read_text()).get("stages", [])]
    if first.get("evaluation"):
        report = json.loads((Path(first["evaluation"]) / "report.json").read_text())
        result["systems"] = {name: {k: round(m[k], 4) for k in ("accuracy", "macro_f1", "format_compliance") if k in m}
                             for name, m in report["systems"].items()}
    manifest = json.loads((Path(first["snapshot"]) / "manifest.json").read_text())
    syn = manifest.get("synthesis") or {}
    result["synthesis"] = {k: syn.get(k) for k in ("requested", "generated", "kept", "label_agreement")}
    result["synthesis_classes_without_a_row"] = sorted(k for k, c in (syn.get("by_class") or {}).items() if c["kept"] == 0)
    for stage in ("synthesize", "train", "evaluate"):
        result[f"progress_lines_{stage}"], result[f"max_gap_{stage}_s"] = _log_gaps(work / "run1.log", stage)
    result["logs"] = str(work)
    if not keep:
        shutil.rmtree(clone, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="HEAD", help="revision to measure (default HEAD)")
    ap.add_argument("--baseline", default=None, help="an earlier revision, measured in the same run")
    ap.add_argument("--keep", action="store_true", help="keep the clones (with their .venv)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "first-run.json")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu(), "runs": []}
    for rev in [r for r in (args.baseline, args.rev) if r]:
        results["runs"].append(measure(rev, args.out.parent, args.keep))
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
