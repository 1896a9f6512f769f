"""Progress on a log (issue 13): a status line every interval while a step runs, a closing line,
JSON lines with --diagnostics-format json, nothing with --quiet or for a short step."""

from __future__ import annotations

import io
import json
import time

from snnc.progress import progress_factory


def _run(interval: float, seconds: float, **kw) -> str:
    stream = io.StringIO()
    with progress_factory(stream=stream, interval=interval, **kw) as factory:
        if factory is None:
            return stream.getvalue()
        with factory("calibrate", 4) as bar:
            for _ in range(4):
                time.sleep(seconds / 4)
                bar.advance()
    return stream.getvalue()


def test_status_lines_while_a_step_runs():
    lines = _run(0.05, 0.6).splitlines()
    assert len(lines) >= 3
    assert lines[0].startswith("snnc: calibrate: ") and "/4 (" in lines[0]
    assert lines[-1].startswith("snnc: calibrate: done, 4/4 in ")


def test_short_step_prints_nothing_and_quiet_never():
    assert _run(5.0, 0.01) == ""
    assert _run(0.05, 0.3, quiet=True) == ""


def test_json_lines():
    lines = _run(0.05, 0.4, json_lines=True).splitlines()
    records = [json.loads(line) for line in lines]
    assert records and all(r["severity"] == "progress" and r["step"] == "calibrate" for r in records)
    assert records[-1]["final"] is True and records[-1]["done"] == 4


def test_a_one_call_step_waits_four_intervals():
    stream = io.StringIO()
    with progress_factory(stream=stream, interval=0.05) as factory:
        with factory("load model", 1) as bar:
            time.sleep(0.12)
            bar.advance()
    assert stream.getvalue() == ""
