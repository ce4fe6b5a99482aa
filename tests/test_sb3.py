"""`--impl sb3`: Stable-Baselines3's DQN and PPO through the real CLI, in the lab's run
directory, with the lab's eval.json, checkpoints and --resume."""

import json
from pathlib import Path

import pytest

from rl_lab.logging import read_metrics
from rl_lab.run import main
from tests.cli_helpers import cli, files_under

FAST = ["--no-dashboard", "--eval-episodes", "2"]
DQN_SMALL = ["--learning-starts", "100", "--train-freq", "64", "--gradient-steps", "8"]


def lab_eval_keys(tmp_path) -> set[str]:
    run_dir = tmp_path / "lab"
    assert main(["dqn", "cartpole", "--total-steps", "200", "--learning-starts", "100",
                 "--eval-interval", "0", "--run-dir", str(run_dir), *FAST]) == 0  # fmt: skip
    return set(json.loads((run_dir / "eval.json").read_text()))


def test_dqn_sb3_run_directory_matches_the_labs(tmp_path, capsys):
    run_dir = tmp_path / "sb3"
    status = main(
        [
            "dqn",
            "cartpole",
            "--impl",
            "sb3",
            "--total-steps",
            "400",
            "--eval-interval",
            "200",
            "--log-interval",
            "100",
            "--run-dir",
            str(run_dir),
            *DQN_SMALL,
            *FAST,
        ]  # fmt: skip
    )
    assert status == 0, capsys.readouterr().err
    for name in ("config.json", "metrics.jsonl", "eval.json", "summary.md", "curve.png"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").iterdir())
    assert (run_dir / "checkpoints" / "latest").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["impl"] == "sb3"
    assert config["sb3"]["arguments"]["train_freq"] == 64
    assert any("double" in note for note in config["sb3"]["mapping"])  # named, not hidden
    report = json.loads((run_dir / "eval.json").read_text())
    assert set(report) == lab_eval_keys(tmp_path)  # compare reads both alike
    assert report["env_steps"] >= 400 and report["episodes"] == 2
    assert report["gradient_steps"] == 8 * report["updates"] > 0
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert any("charts/episodic_return" in row for row in rows)
    assert [row["step"] for row in rows if "eval/mean_return" in row] == [200, 400]
    assert any("losses/td_loss" in row for row in rows)


def test_ppo_sb3_through_the_real_cli(tmp_path):
    run_dir = tmp_path / "run"
    result = cli(
        "ppo", "cartpole", "--impl", "sb3", "--total-steps", "256", "--num-envs", "2",
        "--n-steps", "64", "--batch-size", "64", "--n-epochs", "2", "--eval-interval", "0",
        "--run-dir", run_dir, *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "final evaluation" in result.stdout
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["env_steps"] == 256 and report["updates"] == 2
    assert report["gradient_steps"] == 2 * 2 * 2  # rollouts x epochs x minibatches
    config = json.loads((run_dir / "config.json").read_text())
    assert config["sb3"]["arguments"]["vf_coef"] == config["algo_config"]["vf_coef"] / 2


def test_sb3_resume_continues_from_the_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    first = ["dqn", "cartpole", "--impl", "sb3", "--total-steps", "320", "--eval-interval", "0",
             "--checkpoint-interval", "160", "--run-dir", str(run_dir), *DQN_SMALL, *FAST]  # fmt: skip
    assert main(first) == 0, capsys.readouterr().err
    before = json.loads((run_dir / "eval.json").read_text())
    status = main(["--resume", str(run_dir), "--total-steps", "640", "--no-dashboard"])
    assert status == 0, capsys.readouterr().err
    after = json.loads((run_dir / "eval.json").read_text())
    assert before["env_steps"] == 320 and after["env_steps"] == 640
    assert after["updates"] > before["updates"]  # the replay buffer and counters came back
    assert after["wall_seconds"] > before["wall_seconds"]
    steps = [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")]
    assert steps == sorted(steps) and steps[-1] > 320
    assert main(["eval", str(run_dir), "--episodes", "2"]) == 0
    assert json.loads((run_dir / "reeval.json").read_text())["episodes"] == 2


def test_sb3_ppo_runs_rl_zoo3s_gsde_exploration(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["ppo", "pendulum", "--impl", "sb3", "--use-sde", "--sde-sample-freq", "4",
            "--total-steps", "128", "--num-envs", "2", "--n-steps", "32", "--batch-size", "32",
            "--n-epochs", "1", "--eval-interval", "0", "--checkpoint-interval", "64",
            "--run-dir", str(run_dir), *FAST]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    arguments = json.loads((run_dir / "config.json").read_text())["sb3"]["arguments"]
    assert arguments["use_sde"] is True and arguments["sde_sample_freq"] == 4
    status = main(["--resume", str(run_dir), "--total-steps", "256", "--no-dashboard"])
    assert status == 0, capsys.readouterr().err  # gSDE's log-std matrix checkpoints and loads
    assert json.loads((run_dir / "eval.json").read_text())["env_steps"] == 256


@pytest.mark.parametrize("obs_flag", ["--normalize-obs", "--no-normalize-obs"])
def test_sb3_ppo_checkpoints_and_resumes_its_normalisation(obs_flag, tmp_path, capsys):
    # Pendulum's preset normalises rewards only: VecNormalize then has no observation statistics
    run_dir = tmp_path / "run"
    first = ["ppo", "cartpole", "--impl", "sb3", "--total-steps", "128", "--num-envs", "2",
             "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1", "--eval-interval", "0",
             "--normalize-reward", obs_flag, "--checkpoint-interval", "64",
             "--run-dir", str(run_dir), *FAST]  # fmt: skip
    assert main(first) == 0, capsys.readouterr().err
    status = main(["--resume", str(run_dir), "--total-steps", "256", "--no-dashboard"])
    assert status == 0, capsys.readouterr().err
    assert json.loads((run_dir / "eval.json").read_text())["env_steps"] == 256


@pytest.mark.parametrize(
    "args, message",
    [
        (["dqn", "cartpole", "--impl", "sb3", "--dueling"], "no dueling head"),
        (["dqn", "cartpole", "--impl", "sb3", "--prioritized"], "no prioritized replay"),
        (["ppo", "cartpole", "--impl", "sb3", "--shared-trunk"], "no shared trunk"),
        (["ppo", "pendulum", "--use-sde"], "the lab's PPO has no gSDE"),
        (["dqn", "cartpole", "--impl", "trl"], "dqn has no implementation 'trl'"),
        (["ppo", "sentiment", "--impl", "sb3"], "does not run text tasks"),
    ],
)
def test_impl_refusals_are_one_line(args, message, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main([*args, "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert files_under(run_dir) == []


def test_resume_keeps_the_saved_implementation(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["dqn", "cartpole", "--total-steps", "200", "--learning-starts", "100",
                 "--eval-interval", "0", "--run-dir", str(run_dir), *FAST]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["dqn", "cartpole", "--impl", "sb3", "--resume", str(run_dir)]) == 2
    assert "is a --impl lab run" in capsys.readouterr().err


def test_registry_names_each_implementation_and_its_experiment_class():
    from rl_lab import implementations

    for impls in implementations.IMPLEMENTATIONS.values():
        for impl in impls:
            assert impl.experiment_class().impl == impl.name  # what config.json records
            assert impl.module().Config is not None
    assert implementations.find("dqn", None, "gym").name == "lab"  # lab is the default
    assert implementations.find("grpo", None, "text").name == "trl"  # ... where there is one
    assert implementations.names("ppo") == ["lab", "sb3"]


ZOO_FILES = sorted(
    (Path(__file__).resolve().parent.parent / "experiments/presets/rl-zoo3").glob("*.json")
)


@pytest.mark.parametrize("preset", ZOO_FILES, ids=[path.stem for path in ZOO_FILES])
def test_shipped_rl_zoo3_preset_files_run_through_sb3(preset, tmp_path, capsys):
    """The README's `@rl-zoo3` entries (ALGO-TASK.json): each file's settings map to SB3 and
    train a few steps."""
    algo, task = preset.stem.split("-", 1)
    run_dir = tmp_path / preset.stem
    status = main([algo, task, "--impl", "sb3", "--preset-file", str(preset), "--total-steps",
                   "256", "--eval-interval", "0", "--run-dir", str(run_dir), *FAST])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    config = json.loads((run_dir / "config.json").read_text())
    for key, value in json.loads(preset.read_text())["algo"].items():
        assert config["algo_config"][key] == value, key
