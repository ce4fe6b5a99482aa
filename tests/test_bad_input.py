"""Each user mistake: one line on stderr, exit status 2, no traceback, nothing written."""

import json
import os

import pytest

from tests.cli_helpers import cli, files_under


def assert_user_error(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, words",
    [
        (["dqm", "cartpole"], ["unknown algorithm 'dqm'", "did you mean 'dqn'"]),
        (["dqn", "cartpol"], ["unknown task 'cartpol'", "did you mean 'cartpole'"]),
        (["dqn", "NoSuchEnv-v9"], ["unknown Gymnasium id"]),
        (["dqn"], ["missing TASK"]),
        (["dqn", "cartpole", "--lr", "-1"], ["--lr must be at least 0"]),
        (["dqn", "cartpole", "--total-steps", "-5"], ["--total-steps must be at least 1"]),
        (["dqn", "cartpole", "--batch-size", "lots"], ["--batch-size", "invalid int value"]),
        (["dqn", "cartpole", "--gamma", "1.5"], ["--gamma must be at most 1"]),
        (["dqn", "cartpole", "--hidden", "64,x"], ["--hidden"]),
        (["dqn", "cartpole", "--bogus-flag", "1"], ["unrecognized arguments"]),
        (["dqn", "pendulum"], ["discrete action space", "use ppo"]),
        (["eval", "does/not/exist"], ["not a run directory"]),
        (["--resume", "does/not/exist"], ["not a run directory"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, words, tmp_path):
    result = (
        cli(*args, "--run-dir", tmp_path / "run")
        if args[0] not in ("eval", "--resume")
        else cli(*args)
    )
    assert_user_error(result, *words)
    assert files_under(tmp_path) == []  # nothing half-written
    assert not (tmp_path / "run").exists()


def test_unwritable_run_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        result = cli("dqn", "cartpole", "--run-dir", locked / "run")
        assert_user_error(result, "cannot write the run directory")
    finally:
        locked.chmod(0o700)


def test_run_dir_that_is_a_file(tmp_path):
    target = tmp_path / "afile"
    target.write_text("x")
    result = cli("dqn", "cartpole", "--run-dir", target / "run")
    assert_user_error(result, "cannot write the run directory")


def test_existing_run_is_not_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    result = cli("dqn", "cartpole", "--run-dir", run_dir)
    assert_user_error(result, "already holds a run", "--resume")
    assert (run_dir / "config.json").read_text() == "{}"


def make_run(tmp_path):
    run_dir = tmp_path / "run"
    result = cli(
        "dqn",
        "cartpole",
        "--total-steps",
        "300",
        "--checkpoint-interval",
        "100",
        "--eval-episodes",
        "1",
        "--no-dashboard",
        "--run-dir",
        run_dir,
    )
    assert result.returncode == 0, result.stderr
    return run_dir


def test_resume_of_corrupt_checkpoint(tmp_path):
    run_dir = make_run(tmp_path)
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    (run_dir / "checkpoints" / latest / "tensors.safetensors").write_bytes(b"garbage")
    before = files_under(run_dir)
    assert_user_error(cli("--resume", run_dir), "corrupt")
    assert_user_error(cli("eval", run_dir), "corrupt")
    assert files_under(run_dir) == before


def test_resume_of_corrupt_config(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "config.json").write_text("{not json")
    assert_user_error(cli("--resume", run_dir), "corrupt")


def test_eval_without_checkpoints(tmp_path):
    # (--resume of such a run trains it from step 0: tests/test_resume.py)
    run_dir = make_run(tmp_path)
    for path in sorted((run_dir / "checkpoints").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    assert_user_error(cli("eval", run_dir), "no checkpoint")


def test_resume_rejects_changed_hyperparameters(tmp_path):
    run_dir = make_run(tmp_path)
    assert_user_error(
        cli("dqn", "cartpole", "--resume", run_dir, "--lr", "0.1"), "saved config", "--lr"
    )
    assert json.loads((run_dir / "config.json").read_text())["algo_config"]["lr"] != 0.1


def test_unwritable_run_dir_even_for_root():
    result = cli("dqn", "cartpole", "--run-dir", "/proc/rl_lab_cannot_write_here/run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--run-dir" in result.stderr and len(result.stderr.strip().splitlines()) == 1
