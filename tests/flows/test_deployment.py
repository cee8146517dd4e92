"""The deployment on a real Prefect server: serve, run, watch, artifacts, the review gate, and caching."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import core
from core.review import review_status

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(home: Path, *extra: str):
    """Start `curate serve` on a fresh loopback server (SQLite in `home`); wait for the deployment."""
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_MEMO_STORE_PATH": str(home / "memo.toml"),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "250"}
    log = open(home / "serve.log", "wb")
    proc = subprocess.Popen([str(BIN / "curate"), "serve", "--port", str(port), *extra], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline:
        out = subprocess.run([str(BIN / "prefect"), "deployment", "ls"], env=env, capture_output=True, text=True)
        if "curate-and-train/default" in out.stdout:
            break
        assert proc.poll() is None, (home / "serve.log").read_text()[-3000:]
        time.sleep(2)
    else:
        pytest.fail("the deployment did not appear: " + (home / "serve.log").read_text()[-3000:])
    return proc, env


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect")
    proc, env = _serve(home)
    yield env, home
    proc.terminate()
    proc.wait(timeout=60)


def _run(env, params, *extra):
    return subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", "curate-and-train/default", "--params", json.dumps(params), *extra],
        env=env, capture_output=True, text=True, timeout=600,
    )


def _outputs(tmp_path):
    return ["allow_outside_paths=true", f"output.snapshots={tmp_path / 'snap'}", f"output.runs={tmp_path / 'runs'}", f"output.cache={tmp_path / 'cache'}"]


def test_deployment_run_completes_with_snapshot_adapter_and_artifacts(served, tmp_path):
    from tests.flows.test_flow_training import TINY_TRAIN

    env, home = served
    # two steps are enough here: resuming is test_flow_training's
    # the adapter served as a LoRA request here (configs/banking77.yaml merges it; test_flow_training too)
    overrides = [*_outputs(tmp_path), f"train.output_dir={tmp_path / 'adapters'}", *TINY_TRAIN, "train.max_steps=2",
                 "train.eval_merged=false"]
    out = _run(env, {"overrides": overrides}, "--watch")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Completed" in out.stdout
    snaps = list((tmp_path / "snap" / "banking77").glob("*/manifest.json"))
    assert len(snaps) == 1
    adapters = list((tmp_path / "adapters" / "banking77").glob("*/adapter/adapter_model.safetensors"))
    assert len(adapters) == 1 and json.loads((adapters[0].parent / "train_meta.json").read_text())["global_step"] == 2
    reports = list(adapters[0].parent.parent.glob("eval-*/report.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["adapter_served"] == "lora"  # a LoRARequest (test_flow_training serves it merged)
    tuned, guided = report["systems"]["tuned"], report["systems"]["tuned, guided choice"]
    assert tuned["n"] == guided["n"] == 16  # train.eval_max_rows
    assert guided["format_compliance"] == 1.0  # guided choice: every answer is a label
    arts = subprocess.run([str(BIN / "prefect"), "artifact", "ls"], env=env, capture_output=True, text=True)
    for key in ("banking77-funnel", "banking77-class-mix", "banking77-class-mix-chart", "banking77-snapshot", "banking77-diff",
                "banking77-format-check", "banking77-training", "banking77-evaluation", "banking77-outputs",
                "banking77-training-progress", "banking77-evaluation-progress"):
        assert key in arts.stdout, arts.stdout
    # the stage lines and the long stages' progress reach the run's logs in the UI (Prefect's extra_loggers)
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", out.stdout)[1]
    logs = subprocess.run([str(BIN / "prefect"), "flow-run", "logs", run_id], env=env, capture_output=True, text=True)
    assert "ingest: computed in" in logs.stdout and "train: computed in" in logs.stdout, logs.stdout[-3000:]
    assert re.search(r"training: 2/2 steps \(100%\)", logs.stdout) and re.search(r"evaluation: 32/32 rows", logs.stdout)

    # Unchanged re-run: every stage a cache hit, training and evaluation included; the same snapshot.
    again = _run(env, {"overrides": overrides}, "--watch")
    assert again.returncode == 0
    runs = sorted((tmp_path / "runs" / "banking77").glob("*/run.json"))
    last = json.loads(runs[-1].read_text())
    assert [s["cache"] for s in last["stages"]] == ["hit"] * 5
    assert [s["cache"] for s in last["model_stages"]] == ["hit", "hit"]
    assert Path(last["snapshot"]).parent == snaps[0].parent.parent and Path(last["snapshot"]) == snaps[0].parent
    assert Path(last["adapter"]) == adapters[0].parent


def test_the_served_deployment_has_its_tags_version_and_description(served):
    env, home = served
    out = subprocess.run([str(BIN / "prefect"), "deployment", "inspect", "curate-and-train/default"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'curate-and-train'" in out.stdout and "'banking77'" in out.stdout  # tags: the product, the dataset
    assert re.search(r"'version': '" + re.escape(core.__version__) + r"\+[0-9a-f]{12}'", out.stdout), out.stdout[:3000]
    assert "Curate banking77 into a snapshot" in out.stdout


def test_review_gate_pauses_and_records_the_decision(served, tmp_path):
    env, home = served
    overrides = [*_outputs(tmp_path), "train.enabled=false", "synthesis.enabled=false"]
    out = _run(env, {"overrides": overrides, "require_review": True})
    assert out.returncode == 0, out.stderr
    script = """
import asyncio, sys, time
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
from prefect.flow_runs import resume_flow_run

async def main():
    async with get_client() as client:
        for _ in range(300):
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused", "Suspended"]))))
            if runs:
                print(runs[0].state.name)  # a deployment's run is suspended: no process held while it waits
                await resume_flow_run(runs[0].id, run_input={"approve": True, "reviewer": "ana", "note": "looks right"})
                for _ in range(300):
                    run = await client.read_flow_run(runs[0].id)
                    if run.state.is_final():
                        print(run.state.name)
                        return
                    await asyncio.sleep(1)
            await asyncio.sleep(1)
        print("never paused")

asyncio.run(main())
"""
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert res.stdout.split() == ["Suspended", "Completed"], res.stdout + res.stderr[-2000:]
    snap = next((tmp_path / "snap" / "banking77").glob("*/manifest.json")).parent
    review = review_status(snap)
    assert review["decision"] == "approved" and review["by"] == "ana"


# a small synthesis budget, in float32: the CPU kernels' bf16 batched sums can move a sampled token with a
# batch's make-up (docs/scaling.md), in float32 the samples repeat
SMALL_SYNTHESIS = ["synthesis.enabled=true", "synthesis.oversample=2", "synthesis.max_oversample=2", "synthesis.max_attempts=1",
                   "model.engine.dtype=float32", "model.engine.gpu_memory_utilization=0.1"]


def test_ray_task_runner_gives_the_same_snapshot(tmp_path_factory, tmp_path):
    """Row shards of the clean stage run on a local Ray through prefect-ray, and synthesis on two vLLM engines on
    Ray actors (runner.engines): the same snapshot as in-process with one engine."""
    home = tmp_path_factory.mktemp("prefect-ray")
    proc, env = _serve(home, "--set", "runner.kind=ray", "--set", "runner.num_cpus=2", "--set", "runner.shards=3")
    try:
        ray_out = ["allow_outside_paths=true", f"output.snapshots={tmp_path / 'ray-snap'}", f"output.runs={tmp_path / 'ray-runs'}",
                   f"output.cache={tmp_path / 'ray-cache'}", "runner.kind=ray", "runner.shards=3", "runner.engines=2",
                   "train.enabled=false", *SMALL_SYNTHESIS]
        out = _run(env, {"overrides": ray_out}, "--watch")
        assert out.returncode == 0, out.stdout[-3000:]
        assert out.stdout.count("clean-shard") >= 3 and "merge-clean" in out.stdout
        assert "Started a local Ray instance" in (home / "serve.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    local_out = ["allow_outside_paths=true", f"output.snapshots={tmp_path / 'local-snap'}", f"output.runs={tmp_path / 'local-runs'}",
                 f"output.cache={tmp_path / 'local-cache'}", "train.enabled=false", *SMALL_SYNTHESIS]
    res = subprocess.run([str(BIN / "curate"), "run", *sum((["--set", o] for o in local_out), [])], capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
    assert res.returncode == 0, res.stderr[-3000:]
    totals = {side: json.loads(next((tmp_path / f"{side}-cache" / "banking77" / "05-synthesize").glob("*/synthesis.json")).read_text())
              for side in ("ray", "local")}
    assert totals["ray"]["engines"] == 2 and totals["local"]["engines"] == 1  # the Ray run's child joined the cluster
    assert totals["ray"]["generated"] == totals["local"]["generated"] > 0
    assert totals["ray"]["by_class"] == totals["local"]["by_class"]
    ray_ids = [p.parent.name for p in (tmp_path / "ray-snap" / "banking77").glob("*/manifest.json")]
    local_ids = [p.parent.name for p in (tmp_path / "local-snap" / "banking77").glob("*/manifest.json")]
    assert ray_ids == local_ids and len(ray_ids) == 1
