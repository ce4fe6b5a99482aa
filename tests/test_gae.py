"""GAE and the rollout buffer's bootstrapping: exact, against a naive loop and hand tables."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import envs  # noqa: F401  (registers the toy envs)
from rl_lab import functional as fn
from rl_lab.algos.ppo import PPOConfig, make_agent
from rl_lab.buffers import RolloutBuffer, Transition
from rl_lab.loop import real_next_obs


def naive_gae(rewards, values, next_values, terminated, episode_end, gamma, lam):
    """A_t = sum_l (gamma*lam)^l delta_{t+l}, summed until the episode or the rollout ends."""
    steps, num_envs = rewards.shape
    advantages = np.zeros((steps, num_envs))
    for i in range(num_envs):
        for t in range(steps):
            total, factor = 0.0, 1.0
            for k in range(t, steps):
                bootstrap = gamma * next_values[k, i] * (1.0 - terminated[k, i])
                total += factor * (rewards[k, i] + bootstrap - values[k, i])
                if episode_end[k, i]:
                    break
                factor *= gamma * lam
            advantages[t, i] = total
    return advantages


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_gae_matches_naive_loop(gamma, lam):
    rng = np.random.default_rng(0)
    shape = (12, 3)
    rewards, values, next_values = (rng.normal(size=shape) for _ in range(3))
    terminated = rng.random(shape) < 0.15
    truncated = ~terminated & (rng.random(shape) < 0.15)
    episode_end = terminated | truncated
    expected = naive_gae(rewards, values, next_values, terminated, episode_end, gamma, lam)
    tensors = [
        torch.tensor(x, dtype=torch.float64)
        for x in (rewards, values, next_values, terminated, episode_end)
    ]
    advantages, returns = fn.gae(*tensors, gamma=gamma, lam=lam)
    # fn.gae turns the masks into float32, so gamma*lam is rounded to float32 (rtol ~1e-7).
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(returns.numpy(), expected + values, rtol=1e-6, atol=1e-9)


def hand_gae(terminated, episode_end):
    """gamma 0.9, lam 0.5, rewards 1,2,3, values .5,1,1.5, next values 1,1.5,2 (one env)."""
    column = lambda xs: torch.tensor(xs, dtype=torch.float64).unsqueeze(1)
    return fn.gae(
        column([1.0, 2.0, 3.0]),
        column([0.5, 1.0, 1.5]),
        column([1.0, 1.5, 2.0]),
        column(terminated),
        column(episode_end),
        0.9,
        0.5,
    )


def test_gae_hand_table_termination():
    # delta = 1.4, 2.35, 1.5 (no bootstrap at the terminal step); A_t = delta_t + 0.45 A_t+1
    advantages, returns = hand_gae([0, 0, 1], [0, 0, 1])
    np.testing.assert_allclose(advantages.squeeze(1).numpy(), [2.76125, 3.025, 1.5])
    np.testing.assert_allclose(returns.squeeze(1).numpy(), [3.26125, 4.025, 3.0])


def test_gae_hand_table_truncation_bootstraps_from_final_value():
    # Truncated at step 2: delta_2 = 3 + 0.9 * V(final obs) 2.0 - 1.5 = 3.3.
    advantages, _ = hand_gae([0, 0, 0], [0, 0, 1])
    np.testing.assert_allclose(advantages.squeeze(1).numpy(), [3.12575, 3.835, 3.3])


def test_gae_hand_table_episode_boundary_stops_the_sum():
    # Terminated at step 0: A_0 = 1 - 0.5, nothing flows back from the next episode.
    advantages, _ = hand_gae([1, 0, 0], [1, 0, 0])
    np.testing.assert_allclose(advantages.squeeze(1).numpy(), [0.5, 3.835, 3.3])


def test_rollout_buffer_next_values():
    """Next step's value where the episode goes on, V(final obs) at ends, last values at T-1."""
    buffer = RolloutBuffer(3, 2, (1,), (), np.int64)
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    ends = [
        ([False, True], [False, False], [0.0, 0.0]),  # env 1 terminates at step 0
        ([False, False], [True, False], [7.0, 0.0]),  # env 0 truncated at step 1, V(final)=7
        ([False, False], [False, False], [0.0, 0.0]),
    ]
    for t, (terminated, truncated, end_values) in enumerate(ends):
        buffer.add(
            np.zeros((2, 1)),
            np.zeros(2),
            torch.zeros(2),
            values[t],
            np.ones(2),
            np.array(terminated),
            np.array(truncated),
            torch.tensor(end_values),
        )
    buffer.compute_advantages(torch.tensor([8.0, 9.0]), gamma=1.0, lam=1.0)
    expected = torch.tensor([[3.0, 0.0], [7.0, 6.0], [8.0, 9.0]])
    torch.testing.assert_close(buffer.next_values, expected)
    # lam = gamma = 1: returns are reward sums plus the bootstrap value at the cut.
    expected_returns = [[2.0 + 7.0, 1.0], [1.0 + 7.0, 2.0 + 9.0], [1.0 + 8.0, 1.0 + 9.0]]
    torch.testing.assert_close(buffer.returns, torch.tensor(expected_returns))


@pytest.mark.parametrize("terminal", [True, False])
def test_constant_value_policy_on_constant_reward_env(terminal):
    """V == c everywhere, reward 1, episodes of 5: returns are known in closed form.

    Runs the real agent (act/observe) on ConstantRewardEnv, so this checks that truncated
    episodes bootstrap from the value of their final observation, and terminated ones don't.
    """
    length, num_envs, n_steps, gamma, c = 5, 2, 12, 0.9, 3.0
    env = SyncVectorEnv(
        [
            lambda: gym.make("rl_lab/ConstantReward-v0", episode_length=length, terminal=terminal)
            for _ in range(num_envs)
        ],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    config = PPOConfig(n_steps=n_steps, batch_size=8, gamma=gamma, gae_lambda=1.0)
    agent = make_agent(
        config, env.single_observation_space, env.single_action_space, num_envs, 10_000, seed=0
    )
    with torch.no_grad():  # a constant critic: V(s) = c
        agent.net.value_head.weight.zero_()
        agent.net.value_head.bias.fill_(c)
    obs, _ = env.reset(seed=0)
    while not agent.ready():
        actions = agent.act(obs)
        next_obs, rewards, terminated, truncated, infos = env.step(actions)
        done = np.logical_or(terminated, truncated)
        agent.observe(
            Transition(
                obs, actions, rewards, real_next_obs(next_obs, infos, done), terminated, truncated
            )
        )
        obs = next_obs
    agent.buffer.compute_advantages(torch.full((num_envs,), c), gamma, 1.0)

    expected = []
    for t in range(n_steps):
        left_in_episode = length - t % length
        left = min(left_in_episode, n_steps - t)  # rewards before the episode or rollout ends
        bootstrap = 0.0 if (terminal and left == left_in_episode) else gamma**left * c
        expected.append(sum(gamma**k for k in range(left)) + bootstrap)
    expected = torch.tensor(expected).unsqueeze(1).expand(n_steps, num_envs)
    torch.testing.assert_close(agent.buffer.returns, expected)
