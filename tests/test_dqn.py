"""DQN counters, determinism and must-learn, through the real loop."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers toy envs)
from envs.tasks import Task, make_vector_env
from rl_lab.algos.dqn import DQNAgent, DQNConfig
from rl_lab.evaluation import evaluate
from rl_lab.loop import RunContext, train

IDENTITY = Task("identity", "rl_lab/Identity-v0")


def make(config: DQNConfig, total_steps: int, seed: int = 0, num_envs: int = 1):
    env = gym.make(IDENTITY.env_id)
    agent = DQNAgent(config, env.observation_space, env.action_space, num_envs, total_steps, seed)
    run = RunContext(agent, total_steps, num_envs, seed)
    return agent, run


def test_update_and_target_sync_counters_follow_config():
    config = DQNConfig(
        learning_starts=100, train_freq=4, gradient_steps=2, target_update_interval=10, batch_size=8
    )
    agent, run = make(config, 500)
    train(agent, make_vector_env(IDENTITY, 1), run, [])
    updates = (500 - 100) // 4 + 1  # first update once 100 steps are in, then every 4
    assert run.updates == updates
    assert agent.gradient_steps == 2 * updates
    assert agent.target_syncs == agent.gradient_steps // 10


def test_epsilon_schedule_at_step_t():
    agent, _ = make(DQNConfig(epsilon_start=1.0, epsilon_end=0.1, exploration_fraction=0.5), 1000)
    for steps, expected in [(0, 1.0), (250, 0.55), (500, 0.1), (900, 0.1)]:
        agent.env_steps = steps
        assert agent.epsilon == pytest.approx(expected)


def test_several_envs_count_env_steps():
    config = DQNConfig(learning_starts=0, train_freq=8, gradient_steps=1, batch_size=8, n_step=1)
    agent, run = make(config, 400, num_envs=4)
    train(agent, make_vector_env(IDENTITY, 4), run, [])
    assert run.env_steps == 400 and agent.env_steps == 400
    assert run.updates == 400 // 8


def run_once(seed: int):
    config = DQNConfig(
        learning_starts=50,
        batch_size=16,
        train_freq=2,
        gradient_steps=1,
        n_step=3,
        prioritized=True,
        dueling=True,
    )
    agent, run = make(config, 600, seed)
    returns = []

    class Record:
        def __getattr__(self, name):
            return lambda *args: None

        def should_stop(self, run):
            return False

        def on_episode_end(self, run, episode_return, length):
            returns.append(episode_return)

    train(agent, make_vector_env(IDENTITY, 1), run, [Record()])
    return returns, [p.detach().clone() for p in agent.q_net.parameters()]


def test_same_seed_same_run():
    returns_a, params_a = run_once(3)
    returns_b, params_b = run_once(3)
    assert returns_a == returns_b
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    returns_c, params_c = run_once(4)
    assert not all(torch.equal(a, b) for a, b in zip(params_a, params_c))


@pytest.mark.parametrize(
    "variant", [{"n_step": 1}, {"dueling": True, "n_step": 3, "prioritized": True}]
)
def test_must_learn_identity_env(variant):
    config = DQNConfig(
        learning_starts=200,
        train_freq=1,
        gradient_steps=1,
        batch_size=32,
        lr=3e-3,
        target_update_interval=50,
        exploration_fraction=0.3,
        hidden=(32,),
        **variant,
    )
    agent, run = make(config, 3000, seed=0)
    train(agent, make_vector_env(IDENTITY, 1), run, [])
    result = evaluate(
        lambda obs: agent.act(obs, explore=False), lambda: gym.make(IDENTITY.env_id), 10, seed=123
    )
    assert result.mean_return == 10.0  # the optimal return: every action right


def test_numpy_greedy_matches_torch():
    agent, _ = make(DQNConfig(dueling=True, hidden=(16, 16)), 100)
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    with torch.no_grad():
        expected = agent.q_net(torch.from_numpy(obs)).argmax(-1).numpy()
    assert np.array_equal(agent.q_net.greedy_numpy(obs), expected)


def test_dqn_rejects_continuous_actions():
    from rl_lab.errors import UserError

    env = gym.make("Pendulum-v1")
    with pytest.raises(UserError, match="discrete action space"):
        DQNAgent(DQNConfig(), env.observation_space, env.action_space, 1, 100, 0)
