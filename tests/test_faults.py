"""Faults through the real CLI: a diverging loss, a full disk, Ctrl-C in the final evaluation,
videos on a machine without a display. Each gives one line and keeps what can be kept."""

import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from rl_lab import checkpoint
from tests.cli_helpers import ROOT, cli

QUIET = ["--no-dashboard", "--eval-interval", "0", "--eval-episodes", "2"]


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    # An absurd learning rate: the first update (at 512 steps) drives the network to inf.
    args = ["--lr", "1e20", "--learning-starts", "512", "--checkpoint-interval", "300"]
    result = cli("dqn", "cartpole", "--total-steps", "2000", *args, *QUIET, "--run-dir", run_dir)
    assert result.returncode == 3
    line = one_error_line(result.stderr)
    assert "diverged" in line and "at 512 steps" in line and "(step 300) is kept" in line
    assert checkpoint.latest_step(run_dir / "checkpoints") == 300
    state = checkpoint.load(run_dir / "checkpoints")
    assert checkpoint.all_finite(state["agent"])
    assert not (run_dir / "eval.json").exists()

    resumed = cli("--resume", run_dir, "--no-dashboard")  # restarts from the good checkpoint
    assert "resuming" in resumed.stdout and "from step 300" in resumed.stdout
    assert resumed.returncode == 3 and "at 512 steps" in one_error_line(resumed.stderr)
    assert checkpoint.latest_step(run_dir / "checkpoints") == 300


def limit_file_size(limit: int):
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG instead of killing.
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_gives_one_line_leaves_no_temporary_files_and_keeps_the_checkpoint(
    tmp_path,
):
    run_dir = tmp_path / "run"
    # A DQN checkpoint grows with its replay buffer: the one at 1000 steps fits in 150 kB,
    # the one at 2000 steps does not.
    result = cli(
        "dqn",
        "cartpole",
        "--total-steps",
        "5000",
        "--checkpoint-interval",
        "1000",
        *QUIET,
        "--run-dir",
        run_dir,
        preexec_fn=limit_file_size(150_000),
    )
    assert result.returncode == 4
    line = one_error_line(result.stderr)
    assert "File too large" in line and "(step 1,000) is kept" in line and "--resume" in line
    leftovers = [p.name for p in run_dir.rglob(".*") if p.name != ".lock"]
    assert leftovers == []
    assert checkpoint.load(run_dir / "checkpoints")["run"]["env_steps"] == 1000


def test_ctrl_c_in_the_final_evaluation_says_how_to_continue(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rl_lab.run",
            "dqn",
            "cartpole",
            "--total-steps",
            "300",
            "--no-dashboard",
            "--eval-interval",
            "0",
            "--eval-episodes",
            "5000",  # a few seconds of final evaluation to interrupt
            "--run-dir",
            str(run_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Ctrl-C as a terminal sends it: a suite started in the background (nohup, `&`) passes
        # an ignored SIGINT down, and the run rightly keeps ignoring it after training.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while checkpoint.latest_step(run_dir / "checkpoints") != 300:  # training is over
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.02)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted" not in err
    assert "interrupted at 300 steps; checkpoint saved. Continue with" in out
    assert not (run_dir / "eval.json").exists()
    resumed = cli("--resume", run_dir, "--no-dashboard")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 5000


def test_eval_video_prints_no_sdl_error_without_a_display(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    assert (
        cli("dqn", "cartpole", "--total-steps", "200", *QUIET, "--run-dir", run_dir).returncode == 0
    )
    for name in ("DISPLAY", "XDG_RUNTIME_DIR", "SDL_VIDEODRIVER", "SDL_AUDIODRIVER"):
        monkeypatch.delenv(name, raising=False)
    result = cli("eval", run_dir, "--episodes", "1", "--video")
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower() and "XDG_RUNTIME_DIR" not in result.stderr
    assert (run_dir / "videos" / "eval.mp4").stat().st_size > 1000


def test_eval_video_of_a_mujoco_run_on_a_headless_machine(tmp_path, monkeypatch):
    pytest.importorskip("mujoco")
    run_dir = tmp_path / "run"
    train = ["--total-steps", "128", "--n-steps", "64", "--num-envs", "1"]
    result = cli("ppo", "InvertedPendulum-v5", *train, *QUIET, "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL"):
        monkeypatch.delenv(name, raising=False)
    result = cli("eval", run_dir, "--episodes", "1", "--video")
    assert (run_dir / "reeval.json").exists()  # the numbers are kept whatever the renderer
    if result.returncode == 0:  # EGL is installed: MUJOCO_GL=egl was picked
        assert (run_dir / "videos" / "eval.mp4").stat().st_size > 1000
    else:  # no headless GL library: one line saying what to install
        assert result.returncode == 2
        assert "apt-get install" in one_error_line(result.stderr)
