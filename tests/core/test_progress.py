"""Progress lines: their format, read back by the parent, and a line at least every interval while work runs."""

import logging
import time

from core.progress import Progress, duration, format_progress, parse_progress


def test_a_progress_line_carries_counts_extras_and_an_eta_and_parses_back():
    line = format_progress("training", 40, 80, "steps", 60.0, {"loss": 0.41234, "round": 2})
    assert line == "training: 40/80 steps (50%), loss 0.4123, round 2, 1m00s elapsed, ETA 1m00s"
    parsed = parse_progress("12:00:01 | " + line)
    assert (parsed.what, parsed.done, parsed.total, parsed.unit, parsed.fraction) == ("training", 40, 80, "steps", 0.5)
    done = format_progress("evaluation", 385, 385, "rows", 3.25, finished=True)
    assert done == "evaluation: 385/385 rows (100%), 3.2s elapsed, done"
    assert parse_progress("training: started") is None and parse_progress("evaluation: tuned: accuracy 0.8") is None


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (0.04, 9.4, 12, 65, 3725)] == ["0.0s", "9.4s", "12s", "1m05s", "1h02m"]


def test_long_work_logs_at_start_at_least_every_interval_and_at_the_end(caplog):
    log = logging.getLogger("curate.progress.test")
    with caplog.at_level(logging.INFO, logger=log.name):
        with Progress("synthesis", total=10, unit="rows", every=0.2, logger=log) as p:
            p.update(3, round=1, step="generate")
            time.sleep(0.7)  # a slow round: the ticker still reports the latest state
            p.update(10, step=None)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("synthesis: 0/10 rows (0%)")
    ticks = [line for line in lines[1:-1] if line.startswith("synthesis: 3/10 rows (30%), round 1, step generate")]
    assert len(ticks) >= 2  # every 0.2 s during the 0.7 s wait
    assert lines[-1].startswith("synthesis: 10/10 rows (100%), round 1,") and lines[-1].endswith("done")
    assert "step" not in lines[-1]  # an extra given as None is dropped


def test_work_that_fails_ends_without_a_done_line(caplog):
    log = logging.getLogger("curate.progress.fail")
    with caplog.at_level(logging.INFO, logger=log.name):
        try:
            with Progress("training", total=4, unit="steps", every=60, logger=log):
                raise RuntimeError("boom")
        except RuntimeError:
            pass
    assert [r.getMessage().endswith("done") for r in caplog.records] == [False]

