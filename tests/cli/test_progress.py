"""The shared progress display: bars with an ETA on a terminal, ~10 lines in a log, silence."""

from __future__ import annotations

import io
import time

from rich.console import Console

from audit.cli.progress import Bars


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=120), buffer


def _run(bars: Bars, steps: int, stage: str = "train", pause: float = 0.0) -> None:
    with bars:
        for step in range(1, steps + 1):
            bars(stage, step, steps, note=f"loss {1 / step:.3f}")
            if pause:
                time.sleep(pause)


def test_a_log_gets_a_line_per_tenth_of_a_long_job():
    console, buffer = _console(terminal=False)
    bars = Bars(console=console)
    assert bars.mode == "lines"
    _run(bars, 1000)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 10, lines
    assert lines[0].startswith("train: 10% (100/1,000)") and "ETA" in lines[0]
    assert lines[-1].startswith("train: 100% (1,000/1,000)") and "loss 0.001" in lines[-1]


def test_each_stage_reports_on_its_own_and_a_jump_prints_once():
    console, buffer = _console(terminal=False)
    with Bars(console=console) as bars:
        bars.stage("embed")(5, 10)
        bars("name", 30, 30)
        bars.stage("embed")(10, 10)
        bars("unknown size", 3, 0)  # no total: nothing to report as a fraction
    lines = buffer.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["embed", "name", "embed"], lines
    assert lines[0].startswith("embed: 50% (5/10)") and lines[2].startswith("embed: 100%")


def test_quiet_prints_nothing_on_a_terminal_or_in_a_log():
    for terminal in (True, False):
        console, buffer = _console(terminal)
        bars = Bars(quiet=True, console=console)
        _run(bars, 200)
        assert bars.mode == "off" and buffer.getvalue() == ""


def test_a_terminal_shows_a_bar_with_count_and_eta():
    console, buffer = _console(terminal=True)
    bars = Bars(console=console)
    assert bars.mode == "bar"
    with bars:
        for step in range(1, 6):
            bars("embed images", step, 10)
            time.sleep(0.02)
        bars._progress.refresh()  # type: ignore[union-attr]
        mid_run = buffer.getvalue()
    assert "embed images" in mid_run and "5/10" in mid_run and "━" in mid_run
    assert "ETA 0:00:0" in mid_run  # a real estimate (about 0.1 s left), not -:--:--
