"""Progress reporting for long steps: rich progress bars on a terminal, nothing otherwise.

Library code (training, quantization, hwgen) takes a Progress and opens tasks on it; the CLI
decides whether bars are shown (a terminal, and no --quiet). Bars show the elapsed time and,
for tasks with a known total, the estimated time remaining.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional


class Progress:
    """Progress reporting for long steps: rich bars on a terminal, log lines otherwise."""

    def __init__(self, console=None, enabled: bool = True):
        self._rich = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                      console=console, transient=True)

    def __enter__(self) -> "Progress":
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()

    @contextmanager
    def task(self, description: str, total: Optional[float]) -> Iterator[Callable[..., None]]:
        """Yield update(completed=None, advance=None, description=None)."""
        if self._rich is None:
            yield lambda **kw: None
            return
        tid = self._rich.add_task(description, total=total)

        def update(completed: Optional[float] = None, advance: Optional[float] = None, description: Optional[str] = None) -> None:
            kw: dict = {}
            if completed is not None:
                kw["completed"] = completed
            if advance is not None:
                kw["advance"] = advance
            if description is not None:
                kw["description"] = description
            self._rich.update(tid, **kw)

        try:
            yield update
        finally:
            self._rich.remove_task(tid)
