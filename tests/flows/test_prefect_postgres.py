"""The deployment on a Prefect server whose database is a real PostgreSQL (a throwaway cluster started here).

`make test` installs Debian's PostgreSQL when it is missing (`make postgres`); the cluster
lives in a temporary folder, binds 127.0.0.1 on a free port, and is stopped at the end.
The Prefect server is `curate server start --db postgresql://...`, as a team would run it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from flows.server import LocalPostgres, api_healthy
from tests.flows.test_deployment import _free_port, _outputs, _run
from tests.flows.test_flow_training import TINY_TRAIN

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def postgres():
    # not under pytest's tmp folder: that is private to the user running the tests, and PostgreSQL
    # runs as the postgres user when the tests run as root
    folder = Path(tempfile.mkdtemp(prefix="curate-pg-"))
    cluster = LocalPostgres(folder, port=_free_port()).start()
    yield cluster
    cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _server(home: Path, url: str, port: int) -> subprocess.Popen:
    """`curate server start` on the PostgreSQL at `url`, in its own session (so a test can stop it all)."""
    env = {**os.environ, "PREFECT_HOME": str(home)}
    log = open(home / f"curate-server-{time.time_ns()}.log", "wb")
    proc = subprocess.Popen([str(BIN / "curate"), "server", "start", "--db", url, "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 180
    while not api_healthy(f"http://127.0.0.1:{port}/api"):
        assert proc.poll() is None and time.time() < deadline, Path(log.name).read_text()[-3000:]
        time.sleep(0.5)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def on_postgres(postgres, tmp_path_factory):
    """A Prefect server on the cluster and `curate serve` of the deployment against it."""
    home = tmp_path_factory.mktemp("prefect-pg")
    port = _free_port()
    url = f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/{postgres.database}"
    server = _server(home, url, port)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "COLUMNS": "250"}
    serve_log = open(home / "serve.log", "wb")
    serve = subprocess.Popen([str(BIN / "curate"), "serve", "--no-start-server"], env=env, stdout=serve_log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while "curate-and-train/default" not in subprocess.run([str(BIN / "prefect"), "deployment", "ls"], env=env,
                                                           capture_output=True, text=True).stdout:
        assert serve.poll() is None and time.time() < deadline, (home / "serve.log").read_text()[-3000:]
        time.sleep(2)
    state = {"server": server, "home": home, "port": port, "url": url}
    yield env, state
    _stop(serve)
    _stop(state["server"])


def _rows(postgres: LocalPostgres, sql: str) -> list:
    async def query():
        conn = await asyncpg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, database=postgres.database)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()
    return asyncio.run(query())


def test_the_deployment_runs_to_completion_on_postgresql_with_its_artifacts(on_postgres, postgres, tmp_path):
    env, _ = on_postgres
    overrides = [*_outputs(tmp_path), f"train.output_dir={tmp_path / 'adapters'}", *TINY_TRAIN, "train.max_steps=2",
                 "train.eval_merged=false"]
    out = _run(env, {"overrides": overrides}, "--watch")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Completed" in out.stdout
    assert len(list((tmp_path / "snap" / "banking77").glob("*/manifest.json"))) == 1
    # the run, its task runs and its artifacts are rows of PostgreSQL's tables, not of a SQLite file
    runs = _rows(postgres, "SELECT state_name FROM flow_run")
    assert [r["state_name"] for r in runs] == ["Completed"]
    keys = {r["key"] for r in _rows(postgres, "SELECT key FROM artifact WHERE key IS NOT NULL")}
    for key in ("banking77-funnel", "banking77-snapshot", "banking77-diff", "banking77-format-check",
                "banking77-training", "banking77-evaluation", "banking77-training-progress"):
        assert key in keys, sorted(keys)
    tasks = {r["name"] for r in _rows(postgres, "SELECT name FROM task_run WHERE state_name = 'Completed'")}
    assert {"ingest", "clean", "dedupe", "balance", "snapshot", "train", "evaluate"} <= {t.rsplit("-", 1)[0] for t in tasks}
    assert not list((Path(env["PREFECT_HOME"])).glob("*.db"))  # no SQLite database was made


def _flow_run_state(env: dict, run_id: str) -> str | None:
    script = f"""
import asyncio
from prefect import get_client
async def main():
    async with get_client() as client:
        print((await client.read_flow_run("{run_id}")).state.name)
asyncio.run(main())
"""
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    return res.stdout.strip() or None


def test_a_prefect_server_restarted_in_the_middle_of_a_run_loses_nothing(on_postgres, postgres, tmp_path):
    """Stop the Prefect server while a run is curating, start it again on the same database: the run completes,
    its snapshot is written once, and its record and artifacts are on the restarted server."""
    env, state = on_postgres
    overrides = [*_outputs(tmp_path), "train.enabled=false", "synthesis.enabled=false"]
    out = _run(env, {"overrides": overrides})
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = next(w for w in out.stdout.split() if w.count("-") == 4 and len(w) == 36)
    deadline = time.time() + 300
    while not list((tmp_path / "cache" / "banking77" / "01-ingest").glob("[!.]*/counts.json")):
        assert time.time() < deadline, "the run never started ingesting"
        time.sleep(0.2)
    _stop(state["server"])  # in the middle of curation
    assert not api_healthy(env["PREFECT_API_URL"])
    assert not (tmp_path / "snap").exists()  # the run was still curating when its server went away
    time.sleep(3)
    state["server"] = _server(state["home"], state["url"], state["port"])
    deadline = time.time() + 300
    while (name := _flow_run_state(env, run_id)) not in ("Completed", "Failed", "Crashed", "Cancelled"):
        assert time.time() < deadline, f"the run is still {name}"
        time.sleep(2)
    assert name == "Completed"
    snaps = list((tmp_path / "snap" / "banking77").glob("*/manifest.json"))
    assert len(snaps) == 1
    lines = (tmp_path / "snap" / "banking77" / "index.jsonl").read_text().splitlines()
    assert [json.loads(line)["snapshot_id"] for line in lines] == [snaps[0].parent.name]
    record = json.loads(sorted((tmp_path / "runs" / "banking77").glob("*/run.json"))[-1].read_text())
    assert Path(record["snapshot"]) == snaps[0].parent
    keys = {r["key"] for r in _rows(postgres, f"SELECT key FROM artifact WHERE flow_run_id = '{run_id}'")}
    assert {"banking77-funnel", "banking77-snapshot"} <= keys, sorted(keys)


HOLD_SLOT = """
import pathlib, sys, time
from prefect.concurrency.sync import concurrency
name, go = sys.argv[1], pathlib.Path(sys.argv[2])
with concurrency(name, occupy=1, strict=True, lease_duration=60, raise_on_lease_renewal_failure=False):
    print("held", flush=True)
    while not go.exists():
        time.sleep(0.2)
print("released", flush=True)
"""


def _active_slots(env: dict, name: str) -> int:
    script = ("import sys\nfrom prefect import get_client\nwith get_client(sync_client=True) as c:\n"
              f"    print(c.read_global_concurrency_limit_by_name({name!r}).active_slots)")
    return int(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout)


def test_an_engine_slot_held_across_a_server_restart_is_handed_back(on_postgres, tmp_path):
    """The project's Prefect settings keep concurrency leases in files (pyproject's [tool.prefect.server.concurrency]):
    a stage holding an engine slot while the server restarts still gives it back after (in memory the lease was lost
    and the slot stayed taken until an operator reset it)."""
    env, state = on_postgres
    name = "curate-test-restart-slot"
    subprocess.run([str(BIN / "prefect"), "gcl", "create", name, "--limit", "1"], env=env, check=True, capture_output=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SLOT, name, str(tmp_path / "go")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert _active_slots(env, name) == 1
    assert list((state["home"] / "concurrency_leases").glob("*.json"))  # the lease is a file of the server's home
    _stop(state["server"])
    state["server"] = _server(state["home"], state["url"], state["port"])
    assert _active_slots(env, name) == 1  # still held, by a lease the restarted server knows
    (tmp_path / "go").touch()
    # Prefect's exit may add its own line ("Still processing items ...") after the script's last one
    assert "released" in holder.stdout.read().splitlines() and holder.wait(timeout=60) == 0
    assert _active_slots(env, name) == 0
