"""The one cache: a stage's key follows its inputs, settings and code, the code found through its imports."""

from __future__ import annotations

import ast
import inspect
import json

from core.config import load_config, write_resolved
from core.engine import engine_args
from filters.clean import clean
from filters.dedupe import dedupe
from flows import tasks
from flows.cache import _module_key, cached, code_key, code_modules
from synthesis.synthesize import synthesize_stage
from tests.conftest import base_config, write_config
from trainers.evaluate import evaluate
from trainers.qlora import train


def _package(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _stage_package(root):
    _package(root, {
        "pkg/__init__.py": "",
        "pkg/stage.py": "from pkg.helpers import double\nimport polars\n\ndef run(x):\n    return double(x)\n",
        "pkg/helpers.py": "from pkg import deep\n\ndef double(x):\n    return 2 * x\n",
        "pkg/deep.py": "X = 1\n",
        "pkg/unrelated.py": "Y = 2\n",
    })


def test_the_code_of_a_stage_is_its_module_and_what_it_imports(tmp_path):
    _stage_package(tmp_path)
    assert list(code_modules("pkg.stage", root=tmp_path)) == ["pkg", "pkg.deep", "pkg.helpers", "pkg.stage"]


def test_editing_an_imported_function_or_renaming_the_module_changes_the_key(tmp_path):
    _stage_package(tmp_path)
    before = _module_key("pkg.stage", tmp_path)
    (tmp_path / "pkg/unrelated.py").write_text("Y = 3\n")  # not imported by the stage: same key
    _module_key.cache_clear()
    assert _module_key("pkg.stage", tmp_path) == before
    (tmp_path / "pkg/deep.py").write_text("X = 2\n")  # two imports away
    _module_key.cache_clear()
    edited = _module_key("pkg.stage", tmp_path)
    assert edited != before
    (tmp_path / "pkg/stage.py").rename(tmp_path / "pkg/stage_v2.py")  # the same source under a new name
    _module_key.cache_clear()
    assert _module_key("pkg.stage_v2", tmp_path) not in (before, edited)


def test_the_real_stages_cover_the_filters_they_compose():
    assert {"filters.normalize", "filters.quality", "filters.pii", "filters.blocklist", "filters.labels", "core.config",
            "core.schema"} <= set(code_modules(clean.__module__))
    assert {"filters.exact_dedup", "filters.near_dup"} <= set(code_modules(dedupe.__module__))
    assert {"trainers.format", "trainers.format_check", "trainers.packing", "trainers.sft"} <= set(code_modules(train.__module__))
    assert {"trainers.predict", "core.engine"} <= set(code_modules(evaluate.__module__))
    assert {"filters.clean", "filters.dedupe", "synthesis.templates", "synthesis.sandbox"} <= set(code_modules(synthesize_stage.__module__))
    # the CLI and the flow are nobody's code but their own
    assert not any(m.startswith("flows.") for fn in (clean, dedupe, train, evaluate, synthesize_stage) for m in code_modules(fn.__module__))
    assert code_key(clean) != code_key(dedupe)


def test_a_changed_stage_code_is_computed_again_and_an_unchanged_one_is_a_hit(tmp_path, monkeypatch):
    cfg = load_config(write_config(tmp_path, base_config(tmp_path, ["x.jsonl"])), [f"output.cache={tmp_path / 'cache'}"])
    calls = []

    def compute(out):
        calls.append(out)
        (out / "counts.json").write_text("{}")

    first = cached(cfg, "02-clean", clean, {"prev": "x"}, compute)
    again = cached(cfg, "02-clean", clean, {"prev": "x"}, compute)
    assert (first.cache, again.cache, again.folder) == ("computed", "hit", first.folder) and len(calls) == 1
    assert json.loads((first.path / "key.json").read_text())["code"] == code_key(clean)
    monkeypatch.setattr("flows.cache.code_key", lambda *fns: "edited")  # what an edit to filters/ would give
    changed = cached(cfg, "02-clean", clean, {"prev": "x"}, compute)
    assert changed.cache == "computed" and changed.folder != first.folder and len(calls) == 2


def test_settings_reach_the_evaluation_engine(tmp_path, monkeypatch):
    """model.engine and seed of the run's config are what the evaluation child loads and builds its engine from."""
    cfg = load_config("configs/banking77.yaml", ["model.engine.gpu_memory_utilization=0.25", "seed=7"])
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "train_meta.json").write_text(json.dumps({"global_step": 3}))
    jobs = []

    def run_job(job, inputs, config, *, folder, what, log, on_progress=None, env=None):
        jobs.append((job, inputs, config))
        out = inputs["out"]
        (out / "report.json").write_text(json.dumps({"task_kind": "classification", "systems": {}}))
        (out / "report.md").write_text("")
        folder.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(tasks, "run_job", run_job)
    monkeypatch.setattr(tasks, "evaluation_rows", lambda folder: [])
    result = tasks.evaluate.fn(cfg, tasks.StageOutput("train", str(adapter), "hit"), "snap")
    [(job, _, sent)] = jobs
    assert job == "evaluate" and result.cache == "computed"
    # what the child reads back (the same loader) and builds its engine from
    child = load_config(write_resolved(sent, tmp_path / "config.json"))
    assert child == cfg
    built = engine_args("data/models/x", child.model.engine, seed=child.seed)
    assert built["gpu_memory_utilization"] == 0.25 and built["seed"] == 7
    # and the evaluation's key follows them: another memory share is another evaluation
    other = load_config("configs/banking77.yaml", ["model.engine.gpu_memory_utilization=0.3", "seed=7"])
    assert tasks.evaluate.fn(other, tasks.StageOutput("train", str(adapter), "hit"), "snap").folder != result.folder


def test_tasks_receive_the_resolved_config_and_never_load_one():
    """One load per run (the flow's): the tasks module does not even name the loader."""
    tree = ast.parse(inspect.getsource(tasks))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {a.name for n in ast.walk(tree)
                                                                       if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "load_config" not in names
