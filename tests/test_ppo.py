"""PPO: loss math on hand examples, the optimizer, determinism, must-learn, CLI smoke."""

from __future__ import annotations

import copy
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the toy envs)
from envs.tasks import make_env, make_vector_env
from rl_lab import functional as fn
from rl_lab.algos.ppo import PRESETS, PPOConfig, make_agent
from rl_lab.buffers import Transition
from rl_lab.errors import UserError
from rl_lab.evaluation import evaluate
from rl_lab.loop import RunContext, real_next_obs, train
from rl_lab.optim import FlatAdam, TorchAdam
from rl_lab.registry import get_task
from rl_lab.run import main

# ---------------------------------------------------------------- losses on hand examples


def test_clipped_surrogate_hand_example():
    ratio = torch.tensor([1.5, 0.5, 1.1])
    new_logprob = ratio.log().requires_grad_()
    advantages = torch.tensor([1.0, 1.0, -2.0])
    loss, stats = fn.clipped_surrogate_loss(new_logprob, torch.zeros(3), advantages, clip=0.2)
    # Per sample max(-A r, -A clip(r)): -1.2 (clipped), -0.5 (unclipped: pessimistic), 2.2.
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 3)
    kl = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)]
    assert stats["approx_kl"].item() == pytest.approx(sum(kl) / 3, rel=1e-5)
    loss.backward()
    # No gradient through the clipped sample; d/dlogp (-A r / 3) = -A r / 3 elsewhere.
    torch.testing.assert_close(new_logprob.grad, torch.tensor([0.0, -0.5 / 3, 2.2 / 3]))


def test_clipped_value_loss_hand_example():
    new, old = torch.tensor([1.0, -0.5, 0.1]), torch.zeros(3)
    returns = torch.tensor([2.0, 0.0, 1.0])
    # Clipped: max((1-2)^2, (0.2-2)^2) = 3.24, max(0.25, 0.04) = 0.25, 0.81.
    assert fn.clipped_value_loss(new, old, returns, 0.2).item() == pytest.approx(0.5 * 4.3 / 3)
    assert fn.clipped_value_loss(new, old, returns, None).item() == pytest.approx(0.5 * 2.06 / 3)


def test_flat_adam_matches_torch_adam_with_clipping():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    twin = copy.deepcopy(net)
    flat, reference = (
        FlatAdam(net, lr=1e-2, eps=1e-5),
        torch.optim.Adam(twin.parameters(), 1e-2, eps=1e-5),
    )
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    for _ in range(25):
        flat.zero_grad()
        ((net(x) - y) ** 2).sum().backward()
        flat.clip_grad_norm(0.5)
        flat.step()
        reference.zero_grad()
        ((twin(x) - y) ** 2).sum().backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
        reference.step()
    for mine, theirs in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kernels", ["foreach", "fused"])
def test_torch_adam_matches_flat_adam_and_shares_its_checkpoints(kernels):
    """The ablation's torch.optim.Adam path takes the same steps as FlatAdam, and either
    one continues from the other's state_dict."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    twin = copy.deepcopy(net)
    flat, theirs = FlatAdam(net, lr=1e-2, eps=1e-5), TorchAdam(twin, 1e-2, 1e-5, kernels=kernels)
    x, y = torch.randn(16, 3), torch.randn(16, 2)

    def train(module, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            ((module(x) - y) ** 2).sum().backward()
            optimizer.clip_grad_norm(0.5)
            optimizer.step()

    train(net, flat, 10)
    train(twin, theirs, 10)
    for mine, other in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(mine, other, atol=1e-6, rtol=1e-5)
    # Swap states: each optimizer continues from the other's moments and step count.
    flat_state, torch_state = flat.state_dict(), theirs.state_dict()
    assert torch_state["steps"] == flat_state["steps"] == 10
    flat.load_state_dict(torch_state)
    theirs.load_state_dict(flat_state)
    train(net, flat, 5)
    train(twin, theirs, 5)
    for mine, other in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(mine, other, atol=1e-6, rtol=1e-5)


def test_torch_acting_and_torch_adam_learn_like_the_defaults():
    """--numpy-acting off and --optimizer foreach change how, not what: same seeded run."""
    config = PPOConfig(n_steps=32, batch_size=64, n_epochs=2)
    ablated = PPOConfig(
        n_steps=32, batch_size=64, n_epochs=2, numpy_acting=False, optimizer="foreach"
    )
    ours, torch_only = (train_agent("cartpole", c, 512, 4) for c in (config, ablated))
    for mine, other in zip(ours.net.parameters(), torch_only.net.parameters(), strict=True):
        torch.testing.assert_close(mine, other, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- the agent


def spaces(task_name: str):
    env = make_env(get_task(task_name))
    return env.observation_space, env.action_space


def train_agent(task_name: str, config: PPOConfig, steps: int, num_envs: int, seed: int = 0):
    """Train through the real loop; return the agent."""
    observation_space, action_space = spaces(task_name)
    agent = make_agent(config, observation_space, action_space, num_envs, steps, seed)
    train(
        agent,
        make_vector_env(get_task(task_name), num_envs),
        RunContext(agent, steps, num_envs, seed),
        callbacks=[],
    )
    return agent


def greedy_return(agent, task_name: str, episodes: int = 10) -> float:
    result = evaluate(
        lambda obs: agent.act(obs, explore=False),
        lambda: make_env(get_task(task_name)),
        episodes,
        seed=123,
    )
    return result.mean_return


def fill_rollout(agent, task_name: str, num_envs: int) -> None:
    """Act and observe until the agent's rollout is full (the loop's first half)."""
    env = make_vector_env(get_task(task_name), num_envs)
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


def test_update_reports_metrics_and_anneals():
    config = PPOConfig(
        lr=1e-3, n_steps=16, batch_size=16, n_epochs=3, anneal_lr=True, anneal_clip=True
    )
    agent = make_agent(config, *spaces("CartPole-v1"), 2, total_steps=128, seed=0)
    fill_rollout(agent, "CartPole-v1", 2)
    metrics = agent.update()
    for key in (
        "policy_loss",
        "value_loss",
        "entropy",
        "approx_kl",
        "clip_fraction",
        "explained_variance",
    ):
        assert math.isfinite(metrics[f"losses/{key}"]), key
    assert metrics["charts/learning_rate"] == pytest.approx(1e-3 * (1 - 32 / 128))
    assert metrics["charts/clip_range"] == pytest.approx(0.2 * (1 - 32 / 128))
    assert metrics["charts/gradient_steps"] == 6  # 3 epochs x 2 minibatches of 16
    assert not agent.ready() and agent.updates == 1


def test_target_kl_stops_the_epochs_early():
    config = PPOConfig(n_steps=32, batch_size=16, n_epochs=10, target_kl=1e-9, lr=1e-2)
    agent = make_agent(config, *spaces("CartPole-v1"), 1, 1000, seed=0)
    fill_rollout(agent, "CartPole-v1", 1)
    # The first step sees the rollout's own policy (KL 0); the second already exceeds 1.5e-9.
    assert agent.update()["charts/gradient_steps"] == 1


def test_same_seed_same_parameters_different_seed_different():
    config = PPOConfig(
        n_steps=32, batch_size=64, n_epochs=2, normalize_obs=True, normalize_reward=True
    )
    first = train_agent("CartPole-v1", config, steps=256, num_envs=4, seed=3)
    second = train_agent("CartPole-v1", config, steps=256, num_envs=4, seed=3)
    other = train_agent("CartPole-v1", config, steps=256, num_envs=4, seed=4)
    assert first.updates == 2
    for a, b in zip(first.net.state_dict().values(), second.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(first.obs_rms.mean, second.obs_rms.mean)
    assert not torch.equal(first.net.policy_head.weight, other.net.policy_head.weight)


def test_state_dict_round_trip_and_frozen_eval_statistics():
    config = PPOConfig(
        n_steps=16, batch_size=32, n_epochs=1, normalize_obs=True, normalize_reward=True
    )
    agent = train_agent("Pendulum-v1", config, steps=64, num_envs=2)
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    mean_before = agent.obs_rms.mean.copy()
    greedy = agent.act(obs, explore=False)
    np.testing.assert_array_equal(agent.obs_rms.mean, mean_before)  # evaluation never updates
    assert np.all(greedy >= -2.0) and np.all(greedy <= 2.0)  # clipped to Pendulum's bounds

    state = copy.deepcopy(agent.state_dict())
    restored = make_agent(config, *spaces("Pendulum-v1"), 2, 64, seed=99)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.act(obs, explore=False), greedy)
    np.testing.assert_array_equal(restored.return_rms.var, agent.return_rms.var)
    torch.testing.assert_close(restored.optimizer.exp_avg, agent.optimizer.exp_avg)


def test_reward_scaling_divides_by_std_of_discounted_return():
    config = PPOConfig(normalize_reward=True, gamma=0.9)
    agent = make_agent(config, *spaces("CartPole-v1"), 1, 1000, seed=0)
    rewards = np.random.default_rng(1).uniform(0, 2, size=50)
    returns, running = [], 0.0
    for reward in rewards[:-1]:
        running = 0.9 * running + reward
        returns.append(running)
        agent.scale_rewards(np.array([reward]), np.array([False]))
    running = 0.9 * running + rewards[-1]
    returns.append(running)
    scaled = agent.scale_rewards(np.array([rewards[-1]]), np.array([True]))
    assert scaled[0] == pytest.approx(rewards[-1] / np.std(returns), rel=1e-3)
    assert agent.discounted_return[0] == 0.0  # an episode end starts a new return


def test_unsupported_action_space_is_a_user_error():
    box = gym.spaces.Box(-1, 1, (3,), np.float32)
    with pytest.raises(UserError, match="Discrete or 1-D Box"):
        make_agent(PPOConfig(), box, gym.spaces.MultiBinary(3), 1, 100, 0)
    with pytest.raises(UserError, match="batch-size"):
        make_agent(PPOConfig(n_steps=8, batch_size=64), box, gym.spaces.Discrete(2), 2, 100, 0)


# ---------------------------------------------------------------- must-learn on toy envs


def test_learns_identity_discrete():
    config = PPOConfig(
        lr=3e-3, n_steps=32, batch_size=64, n_epochs=4, gamma=0.5, activation="relu", hidden=(32,)
    )
    agent = train_agent("rl_lab/Identity-v0", config, steps=4_000, num_envs=4)
    assert greedy_return(agent, "rl_lab/Identity-v0") >= 9.5  # optimum 10, random 2.5


def test_learns_identity_continuous():
    config = PPOConfig(
        lr=3e-3,
        n_steps=32,
        batch_size=64,
        n_epochs=4,
        gamma=0.5,
        activation="relu",
        hidden=(32,),
        log_std_init=-0.5,
    )
    agent = train_agent("rl_lab/IdentityContinuous-v0", config, steps=6_000, num_envs=4)
    # Optimum 0; a constant 0 action scores about -3.3 over 10 steps.
    assert greedy_return(agent, "rl_lab/IdentityContinuous-v0") >= -0.2


# ---------------------------------------------------------------- through the CLI


@pytest.mark.parametrize("task", sorted(PRESETS))
def test_cli_smoke_every_preset(task, tmp_path):
    run_dir = tmp_path / "run"
    status = main(
        [
            "ppo",
            task,
            "--total-steps",
            "256",
            "--no-dashboard",
            "--run-dir",
            str(run_dir),
            "--eval-episodes",
            "1",
        ]
    )
    assert status == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["env_steps"] >= 256 and report["episodes"] == 1


def test_cli_resume_and_eval(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    flags = ["--no-dashboard", "--eval-episodes", "2", "--eval-interval", "0"]
    assert (
        main(
            [
                "ppo",
                "cartpole",
                "--total-steps",
                "512",
                "--run-dir",
                run_dir,
                "--checkpoint-interval",
                "256",
                *flags,
            ]
        )
        == 0
    )
    assert (
        main(["ppo", "cartpole", "--resume", run_dir, "--total-steps", "1024", "--no-dashboard"])
        == 0
    )
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["env_steps"] == 1024 and report["updates"] == 4  # rollouts of 8 x 32
    # 5 epochs of 2 minibatches (256 rows, batches of 128) per update, counted across resume.
    assert report["gradient_steps"] == 4 * 5 * 2
    assert main(["eval", run_dir, "--episodes", "2"]) == 0
    assert json.loads((tmp_path / "run" / "reeval.json").read_text())["episodes"] == 2


class MultiBinaryEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.MultiBinary(2)


def test_cli_wrong_action_space_exits_2_and_writes_nothing(tmp_path, capsys):
    if "rl_lab_test/MultiBinary-v0" not in gym.registry:
        gym.register("rl_lab_test/MultiBinary-v0", entry_point=MultiBinaryEnv)
    run_dir = tmp_path / "run"
    status = main(
        ["ppo", "rl_lab_test/MultiBinary-v0", "--run-dir", str(run_dir), "--no-dashboard"]
    )
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "MultiBinary" in error
    assert not run_dir.exists()
