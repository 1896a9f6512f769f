"""Progress of the long steps (loading, calibration, simulation, fine-tuning epochs, eval).

A *progress factory* is what :class:`snnc.pass_manager.PassContext` calls ``progress``:
``factory(description, total)`` returns a context manager whose ``advance(n)`` counts work done.
:func:`progress_factory` picks one for the command line:

* on a terminal: a rich progress bar (transient: it disappears when the step ends);
* otherwise (a log, CI, a pipe, a SLURM job): one status line on stderr every ``interval`` (30) seconds
  while a step runs, ``snnc: calibrate: 12/63 (19%), 34 s, about 2 min 20 s left``, and one when a
  step that printed a status ends, so that a log shows where a long run is; steps shorter than
  ``interval`` (a step of one opaque call, e.g. loading the model: 4 intervals) print nothing.  With ``--diagnostics-format json`` each line is a JSON object
  (``severity: "progress"``);
* ``--quiet``: nothing.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

INTERVAL_S = 30.0  # a log line every 30 s of a step: enough to see where a run is, not a flood


@contextmanager
def progress_factory(*, quiet: bool = False, json_lines: bool = False, stream: TextIO | None = None,
                     interval: float = INTERVAL_S) -> Iterator[Any]:
    stream = stream or sys.stderr
    if quiet:
        yield None
        return
    if stream.isatty() and not json_lines:
        with _rich(stream) as track:
            yield track
        return
    yield _LogProgress(stream, interval, json_lines).track


@contextmanager
def _rich(stream: TextIO) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
                  console=Console(file=stream)) as progress:

        @contextmanager
        def track(description: str, total: int) -> Iterator[Any]:
            task = progress.add_task(description, total=total)

            class _Tracker:
                def advance(self, n: int = 1) -> None:
                    progress.advance(task, n)

            try:
                yield _Tracker()
            finally:
                progress.remove_task(task)

        yield track


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m} min"


class _LogProgress:
    """Periodic one-line status on a stream that is not a terminal (a background thread wakes every
    ``interval`` seconds, so that a step with no batches, e.g. one long simulation, still shows)."""

    def __init__(self, stream: TextIO, interval: float, json_lines: bool):
        self.stream, self.interval, self.json_lines = stream, interval, json_lines
        self.lock = threading.Lock()

    @contextmanager
    def track(self, description: str, total: int) -> Iterator[Any]:
        state = _Step(description, max(int(total), 0))
        stop = threading.Event()

        def tick() -> None:
            # a step of one opaque call (loading a model) says nothing for its first 4 intervals:
            # only a really long one is worth a line in the log
            if total <= 1 and stop.wait(3 * self.interval):
                return
            while not stop.wait(self.interval):
                self._line(state, final=False)

        thread = threading.Thread(target=tick, name="snnc-progress", daemon=True)
        thread.start()
        try:
            yield state
        finally:
            stop.set()
            thread.join()
            if state.printed:
                self._line(state, final=True)

    def _line(self, step: _Step, final: bool) -> None:
        elapsed = time.perf_counter() - step.start
        done, total = step.done, step.total
        if final:
            message = f"{step.description}: done, {done}/{total} in {_duration(elapsed)}"
        elif total > 0:
            message = f"{step.description}: {done}/{total} ({100 * done // total}%), {_duration(elapsed)}"
            if 0 < done < total:
                message += f", about {_duration(elapsed / done * (total - done))} left"
        else:
            message = f"{step.description}: {_duration(elapsed)}"
        step.printed = True
        if self.json_lines:
            text = json.dumps({"severity": "progress", "code": "progress", "message": message,
                               "step": step.description, "done": done, "total": total,
                               "elapsed_s": round(elapsed, 1), "final": final})
        else:
            text = f"snnc: {message}"
        with self.lock:
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed: progress is not worth failing for
                pass


class _Step:
    def __init__(self, description: str, total: int):
        self.description, self.total = description, total
        self.done = 0
        self.start = time.perf_counter()
        self.printed = False

    def advance(self, n: int = 1) -> None:
        self.done += n
