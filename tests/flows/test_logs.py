"""The run's log lines: a child's progress recognized by its parent, a start and an end line per stage."""

import json
import logging

import pytest

from flows.cache import StageOutput
from flows.logs import run_log, stage_logged
from flows.proc import CHILD_LINE_FORMAT, relayed


def test_a_childs_curate_lines_are_recognized_by_its_parent_and_nothing_else_is():
    record = logging.LogRecord("curate.progress", logging.INFO, __file__, 1, "training: 2/4 steps (50%)", None, None)
    line = logging.Formatter(CHILD_LINE_FORMAT, "%H:%M:%S").format(record)
    assert relayed(line + "\n") == "training: 2/4 steps (50%)"
    assert relayed("Loading weights: 100%|####| 272/272\r12:00:00 | curate | evaluation: 1/2 rows") == "evaluation: 1/2 rows"
    assert relayed("{'loss': '0.29', 'epoch': '0.5'}") is None
    assert relayed("12:00:00 | INFO | curate | not ours") is None


def test_a_stage_logs_its_start_and_its_end_with_its_own_time_and_counts(tmp_path):
    folder = tmp_path / "stage"
    folder.mkdir()
    counts = {"stage": "clean", "rows_in": 10, "kept": 7, "filtered": {"too_short": 2}, "quarantined": {"bad_label": 1}}
    (folder / "counts.json").write_text(json.dumps(counts))

    @stage_logged
    def clean() -> StageOutput:
        return StageOutput("02-clean", str(folder), "computed")

    @stage_logged
    def broken() -> StageOutput:
        raise ValueError("no")

    with run_log(tmp_path / "run.log") as path:
        out = clean()
        with pytest.raises(ValueError):
            broken()
    assert out.seconds is not None and out.seconds >= 0
    lines = [line.split(" | ", 1)[1] for line in path.read_text().splitlines()]
    assert lines[0] == "clean: started"
    assert lines[1].startswith("clean: computed in ") and lines[1].endswith("| 10 rows in, 7 kept, 2 filtered, 1 quarantined")
    assert lines[2] == "broken: started" and lines[3].startswith("broken: failed after ") and lines[3].endswith("ValueError")
    assert not logging.getLogger("curate").propagate  # not printed twice through Prefect's root handler
