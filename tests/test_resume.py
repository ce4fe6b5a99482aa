"""Checkpoints: round trip, resume after SIGKILL, Ctrl-C saves and exits cleanly."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import torch

from rl_lab import checkpoint
from rl_lab.logging import read_metrics
from tests.cli_helpers import ROOT, cli


def test_checkpoint_round_trip_keeps_types(tmp_path):
    state = {
        "run": {"env_steps": 7},
        "t": torch.arange(3.0),
        "a": np.array([1, 2], np.int64),
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1}]},
        "rng": np.random.default_rng(0).bit_generator.state,
        "shape": (2, 3),
        "none": None,
    }
    checkpoint.save(tmp_path, state)
    loaded = checkpoint.load(tmp_path)
    assert torch.equal(loaded["t"], state["t"]) and np.array_equal(loaded["a"], state["a"])
    assert list(loaded["optimizer"]["state"]) == [0]
    assert loaded["rng"] == state["rng"] and loaded["shape"] == (2, 3) and loaded["none"] is None


def start(run_dir, *extra):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rl_lab.run",
            "dqn",
            "cartpole",
            "--total-steps",
            "200000",
            "--checkpoint-interval",
            "500",
            "--eval-interval",
            "0",
            "--no-dashboard",
            "--run-dir",
            str(run_dir),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(run_dir, at_least: int, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        latest = run_dir / "checkpoints" / "latest"
        if latest.exists() and int(latest.read_text().strip()[5:]) >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def test_resume_after_sigkill_loses_at_most_one_interval(tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_checkpoint(run_dir, 2000)
    process.kill()  # SIGKILL: no chance to save anything
    process.wait()
    saved = int((run_dir / "checkpoints" / "latest").read_text().strip()[5:])
    result = cli("--resume", run_dir, "--total-steps", str(saved + 1000))
    assert result.returncode == 0, result.stderr
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["env_steps"] == saved + 1000
    steps = [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")]
    assert steps == sorted(steps)  # rows after the checkpoint were dropped, then redone


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_checkpoint(run_dir, 1000)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "--resume" in out
    saved = int((run_dir / "checkpoints" / "latest").read_text().strip()[5:])
    assert saved % 500 != 0 or saved > 1000  # a save at the interrupt, not only the periodic one
    state = checkpoint.load(run_dir / "checkpoints")
    assert state["run"]["env_steps"] == saved
