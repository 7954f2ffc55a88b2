"""Progress bars (rich) for long data work, drawn on stderr; `enabled=False` (--quiet) draws nothing."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class Bar:
    """`advance(n)` moves the bar by n characters of text; `describe(text)` relabels it."""

    def __init__(self, progress=None, task=None):
        self._progress, self._task = progress, task

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)


@contextmanager
def progress_bar(description: str, enabled: bool, total: int | None = None) -> Iterator[Bar]:
    if not enabled:
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn,
                               TransferSpeedColumn)

    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield Bar(progress, progress.add_task(description, total=total))
