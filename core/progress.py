"""Progress a person can follow, in a terminal and in a log file alike: one logger, one line format.

    log = logging.getLogger("curate")                   # the project's logger (stage lines, progress)
    with Progress("training", total=83, unit="steps") as p:
        for step in ...:
            p.update(step + 1, loss=0.41)               # a line at most every `every` seconds, and at the end
    parse_progress(line)                                # -> ProgressLine(what, done, total), or None

Long work (synthesis, training, evaluation) reports through `Progress`: a line when it
starts, then the latest state at least every `every` seconds (a background ticker, so a
slow step still shows the run is alive), and one when it ends, each with counts, the
rate and an ETA. The lines go to the `curate.progress` logger; whoever runs the work
decides where they show: the CLI's console and run log (flows/logs.py), a Prefect task
log (Prefect's `logging.extra_loggers = "curate"`), or a child process's stdout, which the
parent reads line by line (flows/proc.py) and passes on, parsing each line back with
`parse_progress` for Prefect's progress artifact. Nothing here writes to a terminal.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
from dataclasses import dataclass

LOGGER = "curate"
PROGRESS_LOGGER = f"{LOGGER}.progress"
EVERY_S = 20.0  # at least one line this often while the work runs (the bound is 30 s)

_LINE_RE = re.compile(r"^(?P<what>[a-z][a-z0-9 _-]*): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+)")


def duration(seconds: float) -> str:
    """0.4s, 12s, 1m05s, 1h02m: short and unambiguous in a log line."""
    if seconds < 9.95:
        return f"{max(seconds, 0):.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_progress(what: str, done: int, total: int, unit: str, elapsed: float, extra: dict | None = None,
                    finished: bool = False) -> str:
    """`training: 40/83 steps (48%), loss 0.412, 1m12s elapsed, ETA 1m18s` (the line `parse_progress` reads)."""
    pct = 100.0 * done / total if total else 100.0
    parts = [f"{what}: {done}/{total} {unit} ({pct:.0f}%)"]
    parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in (extra or {}).items()]
    parts.append(f"{duration(elapsed)} elapsed")
    if finished:
        parts.append("done")
    elif 0 < done < total:
        parts.append(f"ETA {duration(elapsed / done * (total - done))}")
    return ", ".join(parts)


@dataclass(frozen=True)
class ProgressLine:
    what: str
    done: int
    total: int
    unit: str

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0


def parse_progress(line: str) -> ProgressLine | None:
    """A line `format_progress` wrote (after any log prefix ending in ' | '), or None."""
    text = line.rsplit(" | ", 1)[-1].strip()
    m = _LINE_RE.match(text)
    if m is None:
        return None
    return ProgressLine(m["what"].strip(), int(m["done"]), int(m["total"]), m["unit"])


class Progress:
    """Counts of long work as log lines: at start, at least every `every` seconds, at the end.

    `update(done, **extra)` records the state (cheap: call it per step or per batch; an extra
    given as None is dropped from the line); the
    ticker thread logs it when `every` seconds have passed since the last line. `total` may
    grow (`update(done, total=...)`), e.g. when synthesis adds a round.
    """

    def __init__(self, what: str, total: int, unit: str, *, every: float = EVERY_S,
                 logger: logging.Logger | None = None):
        self.what, self.total, self.unit, self.every = what, int(total), unit, every
        self.log = logger or logging.getLogger(PROGRESS_LOGGER)
        self.done, self.extra = 0, {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = self._last_line = time.monotonic()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        self._started = time.monotonic()
        self._emit()
        # the caller's context (a Prefect run's, so that the ticker's lines reach that run's log)
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._tick,), name=f"progress-{self.what}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if exc_type is None:
            self._emit(finished=True)

    def update(self, done: int, *, total: int | None = None, **extra) -> None:
        with self._lock:
            self.done = int(done)
            if total is not None:
                self.total = int(total)
            self.extra.update({k: v for k, v in extra.items() if v is not None})
            for k in [k for k, v in extra.items() if v is None]:  # a None drops the key
                self.extra.pop(k, None)

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.every)):
            if time.monotonic() - self._last_line >= self.every:
                self._emit()

    def _emit(self, finished: bool = False) -> None:
        with self._lock:
            line = format_progress(self.what, self.done, self.total, self.unit, time.monotonic() - self._started,
                                   dict(self.extra), finished=finished)
            self._last_line = time.monotonic()
        self.log.info(line)
