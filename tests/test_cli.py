"""The command line end to end: smoke per task, run directory contents, list, eval, video."""

import json

import pytest

from rl_lab.run import main
from tests.cli_helpers import cli

FAST = ["--no-dashboard", "--eval-episodes", "2", "--eval-interval", "0"]


@pytest.mark.parametrize(
    "task", ["cartpole", "acrobot", "mountaincar", "lunarlander", "CartPole-v1"]
)
def test_dqn_smoke_every_task(task, tmp_path, capsys):
    run_dir = tmp_path / "run"
    status = main(
        [
            "dqn",
            task,
            "--total-steps",
            "300",
            "--learning-starts",
            "100",
            "--run-dir",
            str(run_dir),
            *FAST,
        ]
    )
    assert status == 0, capsys.readouterr().err
    report = json.loads((run_dir / "eval.json").read_text())
    for key in ("mean_return", "std_return", "episodes", "returns"):
        assert key in report
    assert report["episodes"] == 2 and report["env_steps"] == 300


def test_run_directory_holds_everything(tmp_path):
    run_dir = tmp_path / "run"
    result = cli(
        "dqn",
        "cartpole",
        "--total-steps",
        "1500",
        "--learning-starts",
        "200",
        "--checkpoint-interval",
        "500",
        "--eval-interval",
        "1000",
        "--eval-episodes",
        "3",
        "--run-dir",
        run_dir,
    )
    assert result.returncode == 0, result.stderr
    assert "final evaluation" in result.stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == "dqn" and config["run"]["total_steps"] == 1500
    assert config["algo_config"]["learning_starts"] == 200
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("charts/episodic_return" in row for row in rows)
    assert any("eval/mean_return" in row for row in rows)
    assert any("losses/td_loss" in row for row in rows)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000000001500"
    assert (run_dir / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "final greedy evaluation" in (run_dir / "summary.md").read_text()

    again = cli("eval", run_dir, "--episodes", "4")
    assert again.returncode == 0, again.stderr
    assert json.loads((run_dir / "reeval.json").read_text())["episodes"] == 4


def test_tensorboard_file_is_readable(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "dqn",
                "cartpole",
                "--total-steps",
                "600",
                "--learning-starts",
                "100",
                "--log-interval",
                "200",
                "--run-dir",
                str(run_dir),
                *FAST,
            ]
        )
        == 0
    )
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "charts/episodic_return" in tags and "losses/td_loss" in tags
    assert "time/sps" in tags


def test_eval_video_writes_mp4(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["dqn", "cartpole", "--total-steps", "200", "--run-dir", str(run_dir), *FAST]) == 0
    assert main(["eval", str(run_dir), "--episodes", "1", "--video"]) == 0
    video = run_dir / "videos" / "eval.mp4"
    assert video.stat().st_size > 1000
    assert video.read_bytes()[4:8] == b"ftyp"


def test_list_shows_algorithms_tasks_presets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("dqn", "cartpole", "lunarlander", "presets"):
        assert word in out


def test_help_lists_every_config_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["dqn", "cartpole", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--lr",
        "--batch-size",
        "--double",
        "--n-step",
        "--prioritized",
        "--seed",
        "--total-steps",
        "--num-envs",
        "--eval-episodes",
        "--resume",
        "--run-dir",
        "--no-dashboard",
    ):
        assert flag in out


def test_several_envs_and_flags_reach_the_config(tmp_path):
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "dqn",
                "cartpole",
                "--num-envs",
                "4",
                "--total-steps",
                "400",
                "--no-double",
                "--dueling",
                "--n-step",
                "3",
                "--prioritized",
                "--hidden",
                "32,32",
                "--run-dir",
                str(run_dir),
                *FAST,
            ]
        )
        == 0
    )
    algo = json.loads((run_dir / "config.json").read_text())["algo_config"]
    assert algo["double"] is False and algo["dueling"] is True and algo["hidden"] == [32, 32]
