"""MetricLogger: every metric goes to metrics.jsonl and to TensorBoard, grouped by prefix."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from rl_lab.loop import Callback, RunContext


class MetricLogger(Callback):
    """record(key, value) collects; dump(step) writes one JSON line and the TB scalars."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when logging

        self.path = run_dir / "metrics.jsonl"
        # Line-buffered: every row is on disk before the next checkpoint, so a kill loses
        # none of the rows that the resumed run keeps (it trims those after its checkpoint).
        self.file = self.path.open("a", buffering=1)
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.pending: dict[str, float] = {}

    def record(self, key: str, value: float) -> None:
        self.pending[key] = float(value)

    def dump(self, step: int) -> None:
        if not self.pending:
            return
        self.file.write(json.dumps({"step": step, **self.pending}) + "\n")
        for key, value in self.pending.items():
            self.writer.add_scalar(key, value, step)
        self.pending = {}

    def on_episode_end(self, run: RunContext, episode_return: float, length: int) -> None:
        self.record("charts/episodic_return", episode_return)
        self.record("charts/episodic_length", length)
        self.dump(run.env_steps)

    def on_log(self, run: RunContext, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            if not key.startswith("eval/"):  # eval rows are written by on_eval
                self.record(key, value)
        self.dump(run.env_steps)
        self.file.flush()

    def on_eval(self, run: RunContext, result) -> None:
        self.record("eval/mean_return", result.mean_return)
        self.record("eval/std_return", result.std_return)
        self.dump(run.env_steps)
        self.file.flush()

    def on_train_end(self, run: RunContext) -> None:
        self.file.close()
        self.writer.close()


def read_metrics(path: Path) -> list[dict]:
    """All rows of a metrics.jsonl (a torn last line after a kill is skipped)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def logged(rows: list[dict], key: str) -> list[tuple]:
    """(step, value) of every metrics row that logged `key`, in file order."""
    return [(row["step"], row[key]) for row in rows if key in row]
