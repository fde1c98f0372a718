"""Progress on stderr: a live rich bar on a terminal, periodic plain lines otherwise."""

from __future__ import annotations

import time
from collections import Counter
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from launcher.run.summary import Result

MIN_RATE_SECONDS = 1.0


class ProgressReporter:
    """Implements execute.Reporter (and the status watcher's notes) for humans."""

    def __init__(
        self,
        label: str,
        *,
        stream: IO[str] | None = None,
        every: float = 5.0,
        force_terminal: bool | None = None,
        rate: bool = True,
    ) -> None:
        self.console = Console(file=stream, stderr=stream is None, force_terminal=force_terminal)
        self.label = label
        self.every = every
        self.show_rate = rate  # launches have a rate; sessions turning final do not
        self.counts: Counter[str] = Counter()
        self.total = 0
        self.done = 0
        self.not_started = 0  # not counted as done: the bar shows what was done
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last = 0.0
        self._start = 0.0

    @property
    def live(self) -> bool:
        return self.console.is_terminal

    def start(self, total: int) -> None:
        self.total = total
        self._start = self._last = time.monotonic()
        if self.live and total:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[counts]}"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=total, rate="", counts="")
        elif total:
            self.console.print(f"{self.label}: {total} to do", highlight=False)

    def _counts(self) -> str:
        text = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        if self.not_started:
            text += f"; stopped: {self.not_started} not started"
        return text

    def advance(self, key: str, result: Result | str) -> None:  # noqa: ARG002 (Reporter)
        if result == Result.not_started:  # stopped (Ctrl-C, --timeout, breaker): not done
            self.not_started += 1
            if self._progress is not None and self._task is not None:
                self._progress.update(self._task, counts=self._counts())
            return
        self.counts[str(result)] += 1
        self.done += 1
        now = time.monotonic()
        rate = self._rate(now)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, rate=rate, counts=self._counts())
        elif now - self._last >= self.every:
            self._last = now
            self.console.print(
                f"{self.label}: {self.done}/{self.total}{f' ({rate})' if rate else ''} {self._counts()}",
                highlight=False,
            )

    def _rate(self, now: float) -> str:
        """Done per second, once a second has passed (before that it is noise: 4372.6/s)."""
        elapsed = now - self._start
        if not self.show_rate or elapsed < MIN_RATE_SECONDS:
            return ""
        return f"{self.done / elapsed:.1f}/s"

    def note(self, message: str) -> None:
        self.console.print(f"note: {message}", highlight=False, markup=False)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        elif self.total:
            self.console.print(
                f"{self.label}: {self.done}/{self.total} {self._counts()}", highlight=False
            )
