"""The deployment from the repo's prefect.yaml on a process work pool: two workers, two runs at once, one engine slot.

As the README says: `prefect work-pool create`, `prefect deploy --all`, `prefect worker start --pool` (twice),
two `prefect deployment run`s. Both runs train and evaluate; the machine's global concurrency limit
(runner.engine_slots: 1, flows/limits.py) lets one model-engine or training task hold a slot at a time,
observed from the server while the runs go; their shared curation ends with one consistent cache and index.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

import pytest

from core.train_config import TrainConfig
from flows.limits import engine_limit_name
from flows.server import api_healthy
from tests.conftest import ROOT
from tests.flows.test_deployment import _free_port
from tests.flows.test_flow_training import TINY_TRAIN

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent

WATCH = """
import json, sys, time
from prefect import get_client
from prefect.exceptions import ObjectNotFound
ids, limit = sys.argv[1].split(","), sys.argv[2]
peak, both_running, states = 0, False, {}
with get_client(sync_client=True) as client:
    for _ in range(1800):
        runs = [client.read_flow_run(i) for i in ids]
        states = {str(r.id): r.state.name for r in runs}
        both_running |= all(r.state.is_running() for r in runs)
        try:
            peak = max(peak, client.read_global_concurrency_limit_by_name(limit).active_slots)
        except ObjectNotFound:
            pass
        if all(r.state.is_final() for r in runs):
            break
        time.sleep(0.25)
    engine = [(str(t.flow_run_id), t.name) for t in client.read_task_runs()
              if t.name.split("-")[0] in ("train", "evaluate") and t.state and t.state.is_completed()]
    slots = client.read_global_concurrency_limit_by_name(limit).limit
print(json.dumps({"peak": peak, "both_running": both_running, "states": states, "engine": engine, "slots": slots}))
"""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


SCHEMA = """
import json
from prefect import get_client
with get_client(sync_client=True) as client:
    print(json.dumps(client.read_deployment_by_name("curate-and-train/default").parameter_openapi_schema))
"""


def test_two_workers_take_two_runs_at_once_and_the_engine_limit_holds(tmp_path):
    home = tmp_path / "prefect"
    home.mkdir()
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "COLUMNS": "250"}
    procs = [subprocess.Popen([str(BIN / "curate"), "server", "start", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=open(tmp_path / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)]
    try:
        deadline = time.time() + 180
        while not api_healthy(env["PREFECT_API_URL"]):
            assert procs[0].poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)

        def prefect(*args: str) -> str:
            out = subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            return out.stdout

        prefect("work-pool", "create", "curate", "--type", "process")
        prefect("--no-prompt", "deploy", "--all")  # the repo's prefect.yaml
        for k in range(2):
            procs.append(subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "curate", "--name", f"w{k}"],
                                          env=env, cwd=ROOT, stdout=open(tmp_path / f"worker{k}.log", "wb"),
                                          stderr=subprocess.STDOUT, start_new_session=True))
        # the same curation (one cache, one snapshot), two trainings that differ (two keys): the limit, not a
        # folder lock, is what keeps them apart
        shared = ["allow_outside_paths=true", f"output.snapshots={tmp_path / 'snap'}", f"output.runs={tmp_path / 'runs'}",
                  f"output.cache={tmp_path / 'cache'}", f"train.output_dir={tmp_path / 'adapters'}", *TINY_TRAIN,
                  "train.max_steps=2", "train.eval_merged=false", "runner.engine_slots=1"]
        schema = json.loads(subprocess.run([sys.executable, "-c", SCHEMA], env=env, capture_output=True, text=True,
                                           check=True).stdout)
        # the UI's form: the config's sections and fields, typed, bounded, described (core/config_form.py)
        assert schema["properties"]["settings"]["anyOf"][0] == {"$ref": "#/definitions/ConfigSettings"}
        train_form = schema["definitions"]["TrainStageConfigSettings"]["properties"]
        assert train_form["method"]["anyOf"][0] == {"enum": list(get_args(TrainConfig.model_fields["method"].annotation)), "type": "string"}
        assert train_form["learning_rate"]["anyOf"][0] == {"exclusiveMinimum": 0, "type": "number"}
        assert train_form["learning_rate"]["description"].startswith("peak learning rate")
        ids = []
        # one run's learning rate as text (`overrides`), the other's through the typed form (`settings`; overrides
        # are applied after it, so the shared ones must not set it)
        shared = [s for s in shared if not s.startswith("train.learning_rate=")]
        for params in ({"overrides": [*shared, "train.learning_rate=1e-3"]},
                       {"overrides": shared, "settings": {"train": {"learning_rate": 2e-3}}}):
            out = prefect("deployment", "run", "curate-and-train/default", "--params", json.dumps(params))
            ids.append(next(w for w in out.split() if w.count("-") == 4 and len(w) == 36))
        watch = subprocess.run([sys.executable, "-c", WATCH, ",".join(ids), engine_limit_name()], env=env,
                               capture_output=True, text=True, timeout=900)
        assert watch.returncode == 0, watch.stderr[-3000:]
        seen = json.loads(watch.stdout.strip().splitlines()[-1])
    finally:
        for proc in reversed(procs):
            _stop(proc)
    logs = "".join((tmp_path / f"worker{k}.log").read_text() for k in range(2))
    assert list(seen["states"].values()) == ["Completed", "Completed"], logs[-4000:]
    assert seen["both_running"]  # two workers, two runs at once
    assert seen["slots"] == 1 and seen["peak"] == 1  # never two engine tasks at once on this machine
    assert sorted(name.split("-")[0] for _, name in seen["engine"]) == ["evaluate", "evaluate", "train", "train"]
    # one consistent cache and snapshot index from the two runs' shared curation
    for stage in ("01-ingest", "02-clean", "03-dedupe", "04-balance"):
        assert len([d for d in (tmp_path / "cache" / "banking77" / stage).iterdir()]) == 1, stage
    snaps = [p.parent.name for p in (tmp_path / "snap" / "banking77").glob("*/manifest.json")]
    lines = (tmp_path / "snap" / "banking77" / "index.jsonl").read_text().splitlines()
    assert len(snaps) == 1 and {json.loads(line)["snapshot_id"] for line in lines} == set(snaps)
    adapters = list((tmp_path / "adapters" / "banking77").glob("*/adapter/train_meta.json"))
    assert sorted(json.loads(p.read_text())["config"]["learning_rate"] for p in adapters) == [1e-3, 2e-3]
