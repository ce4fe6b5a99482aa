"""The evaluation harness: which episodes an evaluation plays."""

import gymnasium as gym
import numpy as np

from rl_lab.evaluation import episode_seeds, evaluate


def do_nothing(obs: np.ndarray) -> np.ndarray:
    return np.zeros((len(obs), 1), dtype=np.float32)


def pendulum_return_from(seed: int) -> float:
    env, total = gym.make("Pendulum-v1"), 0.0
    env.reset(seed=seed)
    done = False
    while not done:
        _, reward, terminated, truncated, _ = env.step(np.zeros(1, dtype=np.float32))
        total, done = total + float(reward), terminated or truncated
    return total


def test_runs_with_neighbouring_seeds_play_different_episodes():
    # With seed + j, run 100's episodes 1-9 were run 101's episodes 0-8.
    assert not set(episode_seeds(100, 10)) & set(episode_seeds(101, 10))
    assert len(set(episode_seeds(100, 10))) == 10
    assert episode_seeds(100, 10)[:3] == episode_seeds(100, 3)  # more episodes extend the list


def test_each_episode_starts_from_its_seed_whatever_the_parallelism():
    def env_fn():
        return gym.make("Pendulum-v1")

    one_by_one = evaluate(do_nothing, env_fn, 4, seed=7, parallel=1)
    side_by_side = evaluate(do_nothing, env_fn, 4, seed=7, parallel=3)
    expected = [pendulum_return_from(s) for s in episode_seeds(7, 4)]
    assert one_by_one.returns == side_by_side.returns == expected
    assert len(set(expected)) == 4  # four different start states
