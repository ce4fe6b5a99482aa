"""The observation adapter: one-hot / flattened observations for DQN and PPO, the rest refused."""

import importlib
import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from envs.observations import adapt_observations, flattenable
from envs.tasks import Task, make_env
from rl_lab import runner
from rl_lab.errors import UserError
from rl_lab.registry import get_algo
from tests.cli_helpers import cli, files_under


def test_discrete_becomes_one_hot():
    env = make_env(Task("fl", "FrozenLake-v1", {"is_slippery": False}))
    assert env.observation_space == spaces.Box(0, 1, (16,), np.float32)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.tolist() == [1.0] + [0.0] * 15
    obs, *_ = env.step(2)  # right: state 1
    assert obs.argmax() == 1 and obs.sum() == 1


def test_tuple_of_discrete_is_flattened_with_gymnasium():
    env = make_env(Task("bj", "Blackjack-v1"))
    raw = gym.make("Blackjack-v1")
    assert env.observation_space.shape == (spaces.flatdim(raw.observation_space),)
    obs, _ = env.reset(seed=3)
    raw_obs, _ = raw.reset(seed=3)
    expected = spaces.flatten(raw.observation_space, raw_obs)
    np.testing.assert_array_equal(obs, expected.astype(np.float32))


def test_box_observations_pass_unchanged():
    env = make_env(Task("cp", "CartPole-v1"))
    assert env.observation_space == gym.make("CartPole-v1").observation_space


@pytest.mark.parametrize(
    "space, ok",
    [
        (spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Box(-1, 1, (2,))}), True),
        (spaces.MultiDiscrete([2, 3]), True),
        (spaces.MultiBinary(4), True),
        (spaces.Tuple((spaces.Discrete(2), spaces.Tuple((spaces.MultiBinary(2),)))), True),
        (spaces.Text(5), False),
        (spaces.Tuple((spaces.Discrete(2), spaces.Text(3))), False),
        (spaces.Sequence(spaces.Discrete(2)), False),
        (spaces.Graph(spaces.Box(0, 1, (2,)), None), False),
    ],
)
def test_supported_spaces(space, ok):
    assert flattenable(space) == ok


class TextObservationEnv(gym.Env):
    observation_space = spaces.Text(8)
    action_space = spaces.Discrete(2)


def test_unsupported_space_is_one_line():
    with pytest.raises(UserError, match="do not take; supported: Box, Discrete"):
        adapt_observations(TextObservationEnv(), "texty")


@pytest.mark.parametrize("algo, env_id", [("dqn", "Taxi-v4"), ("ppo", "FrozenLake-v1")])
def test_discrete_observation_tasks_run_through_the_cli(algo, env_id, tmp_path):
    run_dir = tmp_path / "run"
    result = cli(
        algo,
        env_id,
        "--total-steps",
        "300",
        "--eval-episodes",
        "2",
        "--no-dashboard",
        "--run-dir",
        run_dir,
        *(["--n-steps", "64"] if algo == "ppo" else ["--learning-starts", "100"]),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 2
    assert cli("eval", run_dir, "--episodes", "2").returncode == 0


def test_blackjack_tuple_observations_train_and_evaluate(tmp_path):
    """Before the adapter, Tuple observations crashed with a traceback in the replay buffer."""
    run_dir = tmp_path / "run"
    result = cli(
        "dqn",
        "Blackjack-v1",
        "--total-steps",
        "300",
        "--learning-starts",
        "100",
        "--eval-episodes",
        "5",
        "--no-dashboard",
        "--run-dir",
        run_dir,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_unsupported_task_writes_nothing(tmp_path):
    gym.register("rl_lab_test/TextObs-v0", entry_point=TextObservationEnv)
    try:
        task = Task("texty", "rl_lab_test/TextObs-v0")
        spec = get_algo("dqn")
        module = importlib.import_module("rl_lab.algos.dqn")
        with pytest.raises(UserError, match="texty"):
            runner.Experiment.create(spec, task, module, module.Config, {}, {}, tmp_path / "r")
        assert files_under(tmp_path) == []
    finally:
        gym.registry.pop("rl_lab_test/TextObs-v0")


def test_dqn_learns_deterministic_frozenlake_from_one_hot_states(tmp_path):
    """The state id as one float barely learns; one-hot states solve the 4x4 lake in 3k steps."""
    task = Task("frozenlake-det", "FrozenLake-v1", {"is_slippery": False}, 1.0)
    spec = get_algo("dqn")
    module = importlib.import_module("rl_lab.algos.dqn")
    run = {"total_steps": 3000, "seed": 0, "eval_episodes": 5, "eval_interval": 0}
    algo = {
        "learning_starts": 300,
        "train_freq": 50,
        "gradient_steps": 16,
        "exploration_fraction": 0.6,
        "target_update_interval": 32,
        "hidden": (32,),
    }
    experiment = runner.Experiment.create(
        spec, task, module, module.Config, run, algo, tmp_path / "run"
    )
    assert experiment.train(dashboard=False) == 0
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["mean_return"] == 1.0
