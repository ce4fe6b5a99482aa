"""The live terminal dashboard (rich), or plain log lines when stdout is not a terminal."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rl_lab.loop import Callback, RunContext

BLOCKS = " ▁▂▃▄▅▆▇█"


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def curve_rows(values: list[float], width: int, height: int) -> list[str]:
    """Draw values as a column chart `height` rows tall: each column is a bucket's mean."""
    if not values:
        return [""] * height
    buckets = min(width, len(values))
    means = []
    for b in range(buckets):
        chunk = values[b * len(values) // buckets : (b + 1) * len(values) // buckets] or [
            values[-1]
        ]
        means.append(sum(chunk) / len(chunk))
    low, high = min(means), max(means)
    span = (high - low) or 1.0
    levels = [(m - low) / span * height * 8 for m in means]  # eighths of a row
    rows = []
    for row in range(height - 1, -1, -1):
        line = ""
        for level in levels:
            fill = min(max(level - row * 8, 0), 8)
            line += BLOCKS[int(fill)]
        rows.append(line)
    return rows


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


class Dashboard(Callback):
    """Shows the run while it trains; `live=False` prints a plain line every few seconds."""

    def __init__(
        self,
        live: bool | None = None,
        console: Console | None = None,
        refresh_seconds: float = 0.25,
        plain_seconds: float = 2.0,
        unit: str = "steps",
    ):
        self.console = console or Console()
        self.live_mode = self.console.is_terminal if live is None else live
        self.refresh_seconds, self.plain_seconds, self.unit = refresh_seconds, plain_seconds, unit
        self.returns: list[float] = []
        self.recent: deque[float] = deque(maxlen=100)
        self.live: Live | None = None
        self.last_draw = 0.0
        self.samples: list[str] = []  # a few live lines (LM runs show completions here)
        # Named evaluation figures beyond the mean return (LM runs: held-out POSITIVE fraction,
        # reward, KL), shown under "last eval" and in the plain evaluation lines.
        self.eval_rows: dict[str, str] = {}

    # ---------------------------------------------------------- callback hooks

    def on_train_start(self, run: RunContext) -> None:
        if self.live_mode:
            self.live = Live(
                self.render(run),
                console=self.console,
                auto_refresh=False,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.live.start()
        else:
            self.console.print(f"{run.title}: training for {run.total_steps:,} {self.unit}")

    def on_episode_end(self, run: RunContext, episode_return: float, length: int) -> None:
        self.returns.append(episode_return)
        self.recent.append(episode_return)

    def on_step(self, run: RunContext) -> None:
        now = time.perf_counter()
        if self.live is not None and now - self.last_draw >= self.refresh_seconds:
            self.last_draw = now
            self.live.update(self.render(run), refresh=True)

    def on_log(self, run: RunContext, metrics: Mapping[str, float]) -> None:
        now = time.perf_counter()
        if self.live is None and now - self.last_draw >= self.plain_seconds:
            self.last_draw = now
            self.console.print(self.plain_line(run), highlight=False, soft_wrap=True)

    def on_eval(self, run: RunContext, result) -> None:
        if self.live is None:
            rows = self.eval_rows.items()
            extra = "".join(f", {name} {value}" for name, value in rows if name != "evaluated at")
            self.console.print(
                f"eval at {run.env_steps:,} {self.unit}: mean return "
                f"{result.mean_return:.2f} ± {result.std_return:.2f} over "
                f"{result.episodes} episodes{extra}",
                highlight=False,
                soft_wrap=True,
            )

    def on_train_end(self, run: RunContext) -> None:
        self.close(run)

    def close(self, run: RunContext | None = None) -> None:
        """Stop the live display (idempotent), leaving the last frame on screen."""
        if self.live is not None:
            if run is not None:
                self.live.update(self.render(run), refresh=True)
            self.live.stop()
            self.live = None

    # ---------------------------------------------------------- rendering

    def eta(self, run: RunContext) -> float:
        done = run.env_steps / max(run.total_steps, 1)
        return run.elapsed * (1 - done) / done if done > 0 else float("inf")

    def plain_line(self, run: RunContext) -> str:
        latest = run.latest
        parts = [
            f"{run.env_steps:>9,}/{run.total_steps:,} {self.unit}",
            f"return {fmt(self.returns[-1] if self.returns else None)}",
            f"mean100 {fmt(self.mean_recent())}",
            f"best eval {fmt(run.best_eval)}",
        ]
        for key in sorted(latest):
            if key.startswith(("losses/", "charts/")):
                parts.append(f"{key.split('/', 1)[1]} {fmt(latest[key], 3)}")
        parts += [
            f"{fmt(latest.get('time/sps'), 0)} sps",
            f"{fmt(latest.get('time/ups'), 0)} ups",
            f"elapsed {format_seconds(run.elapsed)}",
            f"ETA {format_seconds(self.eta(run))}",
        ]
        return " | ".join(parts)

    def mean_recent(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None

    def render(self, run: RunContext):
        latest = run.latest
        stats = Table.grid(padding=(0, 2))
        stats.add_column(style="bold cyan")
        stats.add_column(justify="right")
        stats.add_row("episodes", f"{run.episodes:,}")
        stats.add_row("last return", fmt(self.returns[-1] if self.returns else None))
        stats.add_row("mean return (100)", fmt(self.mean_recent()))
        stats.add_row("best eval", fmt(run.best_eval))
        stats.add_row("last eval", fmt(run.last_eval))
        for name, value in self.eval_rows.items():
            stats.add_row(name, value)
        for key in sorted(latest):
            if key.startswith(("charts/", "losses/")):
                stats.add_row(key.split("/", 1)[1].replace("_", " "), fmt(latest[key], 4))
        stats.add_row(
            "env steps/s" if self.unit == "steps" else f"{self.unit}/s",
            fmt(latest.get("time/sps"), 0),
        )
        stats.add_row("updates/s", fmt(latest.get("time/ups"), 1))
        for key in sorted(latest):
            if key.startswith("time/") and key not in ("time/sps", "time/ups"):
                stats.add_row(key.split("/", 1)[1].replace("_", " "), fmt(latest[key], 1))

        width = max(20, min(self.console.width - 40, 80))
        curve = Text("\n".join(curve_rows(self.returns, width, 8)), style="green")
        if self.returns:
            low, high = min(self.returns), max(self.returns)
            curve.append(f"\nepisode returns: min {fmt(low)}  max {fmt(high)}", style="dim")

        total_time = sum(run.timers.values()) or 1.0
        split = "  ".join(
            f"{name} {100 * seconds / total_time:4.1f}%" for name, seconds in run.timers.items()
        )
        progress = Table.grid(padding=(0, 1))
        progress.add_row(
            ProgressBar(total=run.total_steps, completed=run.env_steps, width=40),
            f"{run.env_steps:,}/{run.total_steps:,} {self.unit}",
            f"elapsed {format_seconds(run.elapsed)}",
            f"ETA {format_seconds(self.eta(run))}",
        )
        body = Table.grid(padding=(0, 3))
        body.add_row(stats, curve)
        parts = [body, progress, Text(f"time split: {split}", style="dim")]
        if self.samples:
            parts.append(Panel(Text("\n".join(self.samples)), title="samples", border_style="dim"))
        return Panel(Group(*parts), title=run.title, border_style="blue")
