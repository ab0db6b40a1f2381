"""Progress of long jobs on stderr, fed by the library's ``progress`` callbacks.

:class:`Bars` is called as ``bars(stage, done, total)`` (the signature of the audit's
``progress`` callback); ``bars.stage(name)`` binds one stage for the callbacks that report
``(done, total)`` only (embedding, evaluation, naming, search). It shows

* on a terminal: a rich bar per stage with its count, the elapsed time and an ETA;
* otherwise (a log file, CI): one line per stage each time it passes another tenth, so a long
  job leaves about ten lines and a log never fills with carriage returns;
* with ``--quiet``: nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from audit.cli.app import err_console

Mode = Literal["bar", "lines", "off"]
StageProgress = Callable[[int, int], None]


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class _EtaColumn(ProgressColumn):
    """``ETA 0:01:23`` while running (rich's speed estimate), ``done`` when finished."""

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text("done", style="progress.remaining")
        return Text(f"ETA {_clock(task.time_remaining)}", style="progress.remaining")


@dataclass
class _LineState:
    started: float = field(default_factory=time.perf_counter)
    tenths: int = 0  # tenths already reported


class Bars:
    """Progress bars for one command run; use as a context manager (see the module doc)."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.console = console if console is not None else err_console
        self.mode: Mode = "off" if quiet else ("bar" if self.console.is_terminal else "lines")
        self._progress = (
            Progress(
                TextColumn("{task.description}", style="bold", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                _EtaColumn(),
                TextColumn("{task.fields[note]}", markup=False),
                console=self.console,
            )
            if self.mode == "bar"
            else None
        )
        self._tasks: dict[str, TaskID] = {}
        self._lines: dict[str, _LineState] = {}

    def __enter__(self) -> Bars:
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    def __call__(self, stage: str, done: int, total: int | None, note: str = "") -> None:
        """``done`` of ``total`` units of ``stage`` are finished (``total`` 0 or None: unknown)."""
        if self._progress is not None:
            self._update_bar(stage, done, total or None, note)
        elif self.mode == "lines" and total:
            self._maybe_print_line(stage, done, total, note)

    def stage(self, name: str) -> StageProgress:
        """A ``(done, total)`` callback reporting as ``name``."""
        return lambda done, total: self(name, done, total)

    def _update_bar(self, stage: str, done: int, total: int | None, note: str) -> None:
        assert self._progress is not None
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total, note=note)
        self._progress.update(self._tasks[stage], completed=done, total=total, note=note)

    def _maybe_print_line(self, stage: str, done: int, total: int, note: str) -> None:
        state = self._lines.setdefault(stage, _LineState())
        tenths = min(10, done * 10 // total)
        if tenths <= state.tenths:
            return
        state.tenths = tenths
        elapsed = time.perf_counter() - state.started
        remaining = elapsed * (total - done) / done if 0 < done < total else None
        timing = f"{_clock(elapsed)} elapsed" + (
            f", ETA {_clock(remaining)}" if remaining is not None else ""
        )
        line = f"{stage}: {done * 100 // total}% ({done:,}/{total:,}), {timing}"
        self.console.print(line + (f"  {note}" if note else ""), markup=False, highlight=False)
