"""Progress of the asset preparation: a rich bar per stage on a terminal, plain lines otherwise."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


class Stage:
    """One running stage: `advance()` moves its bar (if it has a total), `note()` says a word."""

    def __init__(self, board: PrepProgress, name: str, total: int | None, task=None):
        self.board, self.name, self.total, self.task = board, name, total, task
        self.done, self.last_note = 0, ""
        self.started = self.last_line = time.perf_counter()

    def advance(self, steps: int = 1, note: str = "") -> None:
        self.done += steps
        self.update(note)

    def note(self, text: str) -> None:
        self.update(text)

    def update(self, note: str) -> None:
        self.last_note = note or self.last_note
        if self.task is not None:
            self.board.bars.update(self.task, completed=self.done, note=self.last_note)
            return
        now = time.perf_counter()  # plain lines: at most one every few seconds
        if now - self.last_line >= self.board.plain_seconds:
            self.last_line = now
            count = f" {self.done}/{self.total}" if self.total else ""
            self.board.say(f"  {self.name}{count} {self.last_note} ({now - self.started:.0f} s)")


class PrepProgress:
    """Shows each preparation stage as it runs; `live=None` picks by whether stdout is a TTY."""

    def __init__(
        self, console: Console | None = None, live: bool | None = None, plain_seconds: float = 10
    ):
        self.console = console or Console()
        self.live = self.console.is_terminal if live is None else live
        self.plain_seconds = plain_seconds
        self.bars: Progress | None = None

    def say(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Stage]:
        """A stage from start to end; its last line says how long it took."""
        started = time.perf_counter()
        if self.live:
            self.bars = Progress(
                SpinnerColumn(),
                TextColumn("[bold cyan]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[note]}", style="dim"),
                console=self.console,
                transient=True,
            )
            task = self.bars.add_task(name, total=total, note="")
            with self.bars:
                yield Stage(self, name, total, task)
            self.bars = None
        else:
            self.say(f"preparing  {name} ...")
            yield Stage(self, name, total)
        self.say(f"prepared   {name} ({time.perf_counter() - started:.0f} s)")
