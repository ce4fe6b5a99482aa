"""Replay buffers on scripted transitions."""

import numpy as np
import pytest

from rl_lab.buffers import PrioritizedReplayBuffer, ReplayBuffer, SumTree, Transition


def step(obs, action, reward, next_obs, terminated=False, truncated=False):
    return Transition(
        np.array([[obs]], np.float32),
        np.array([action]),
        np.array([reward]),
        np.array([[next_obs]], np.float32),
        np.array([terminated]),
        np.array([truncated]),
    )


def test_ring_wraps_around_and_overwrites_oldest():
    buffer = ReplayBuffer(3, (1,), num_envs=1, seed=0)
    for i in range(5):
        buffer.add(step(i, 0, float(i), i + 1))
    assert len(buffer) == 3
    assert sorted(buffer.obs[:, 0].tolist()) == [2.0, 3.0, 4.0]
    assert buffer.cursor == 2


def test_same_seed_same_samples():
    a, b = ReplayBuffer(100, (1,), 1, seed=7), ReplayBuffer(100, (1,), 1, seed=7)
    for i in range(50):
        a.add(step(i, 0, 0.0, i + 1))
        b.add(step(i, 0, 0.0, i + 1))
    assert np.array_equal(a.sample(16).indices, b.sample(16).indices)
    c = ReplayBuffer(100, (1,), 1, seed=8)
    for i in range(50):
        c.add(step(i, 0, 0.0, i + 1))
    assert not np.array_equal(a.sample(16).indices, c.sample(16).indices)


def stored(buffer):
    """(obs, reward, next_obs, terminated, discount) rows in insertion order."""
    return [
        (
            buffer.obs[i, 0],
            buffer.reward[i],
            buffer.next_obs[i, 0],
            buffer.terminated[i],
            buffer.discount[i],
        )
        for i in range(len(buffer))
    ]


def test_nstep_mid_episode_and_at_termination():
    g = 0.5
    buffer = ReplayBuffer(100, (1,), 1, seed=0, n_step=3, gamma=g)
    buffer.add(step(0, 0, 1.0, 1))
    buffer.add(step(1, 0, 2.0, 2))
    assert len(buffer) == 0  # window not full yet
    buffer.add(step(2, 0, 4.0, 3))
    buffer.add(step(3, 0, 8.0, 4, terminated=True))
    rows = stored(buffer)
    assert rows[0] == pytest.approx((0, 1 + g * 2 + g * g * 4, 3, 0.0, g**3))
    assert rows[1] == pytest.approx((1, 2 + g * 4 + g * g * 8, 4, 1.0, g**3))
    # the episode ended: the window is flushed with shorter sums, all terminal
    assert rows[2] == pytest.approx((2, 4 + g * 8, 4, 1.0, g**2))
    assert rows[3] == pytest.approx((3, 8, 4, 1.0, g))
    assert len(buffer) == 4


def test_nstep_truncation_bootstraps_from_final_obs():
    g = 0.9
    buffer = ReplayBuffer(100, (1,), 1, seed=0, n_step=3, gamma=g)
    buffer.add(step(0, 0, 1.0, 1))
    buffer.add(step(1, 0, 1.0, 99, truncated=True))
    rows = stored(buffer)
    assert rows[0] == pytest.approx((0, 1 + g, 99, 0.0, g**2))  # not terminal: bootstraps
    assert rows[1] == pytest.approx((1, 1, 99, 0.0, g))
    buffer.add(step(5, 0, 1.0, 6))  # a new episode starts with an empty window
    assert len(buffer) == 2


def test_nstep_windows_are_per_env():
    buffer = ReplayBuffer(100, (1,), 2, seed=0, n_step=2, gamma=1.0)
    for t in range(2):
        buffer.add(
            Transition(
                np.array([[t], [10 + t]], np.float32),
                np.array([0, 0]),
                np.array([1.0, 2.0]),
                np.array([[t + 1], [11 + t]], np.float32),
                np.array([False, False]),
                np.array([False, False]),
            )
        )
    rows = sorted(stored(buffer))
    assert rows[0] == pytest.approx((0, 2.0, 2, 0.0, 1.0))
    assert rows[1] == pytest.approx((10, 4.0, 12, 0.0, 1.0))


def test_sum_tree_prefix_search():
    tree = SumTree(4)
    tree.set(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert tree.total == 10.0
    assert tree.find(np.array([0.5, 1.5, 2.99, 3.0, 9.99])).tolist() == [0, 1, 1, 2, 3]


def test_prioritized_sampling_follows_priorities():
    buffer = PrioritizedReplayBuffer(4, (1,), 1, seed=0, alpha=1.0)
    for i in range(4):
        buffer.add(step(i, 0, 0.0, i))
    buffer.update_priorities(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]) - 1e-6)
    counts = np.zeros(4)
    for _ in range(500):
        counts += np.bincount(buffer.sample(20).indices, minlength=4)
    assert counts / counts.sum() == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=0.01)


def test_prioritized_importance_weights():
    buffer = PrioritizedReplayBuffer(2, (1,), 1, seed=0, alpha=1.0)
    buffer.add(step(0, 0, 0.0, 0))
    buffer.add(step(1, 0, 0.0, 1))
    buffer.update_priorities(np.array([0, 1]), np.array([1.0, 3.0]) - 1e-6)
    buffer.beta = 1.0
    sample = buffer.sample(64)
    # w_i = (N P_i)^-1 / max: P = (0.25, 0.75) -> w = (2, 2/3) / 2 = (1, 1/3)
    expected = np.where(sample.indices == 0, 1.0, 1 / 3)
    assert sample.weights.numpy() == pytest.approx(expected, rel=1e-4)


def test_new_transitions_get_max_priority_and_state_round_trips():
    buffer = PrioritizedReplayBuffer(8, (1,), 1, seed=3)
    for i in range(3):
        buffer.add(step(i, 0, 0.0, i))
    buffer.update_priorities(np.array([0]), np.array([5.0]))
    buffer.add(step(3, 0, 0.0, 3))
    assert buffer.tree.get([3])[0] == pytest.approx(buffer.tree.get([0])[0])
    clone = PrioritizedReplayBuffer(8, (1,), 1, seed=99)
    clone.load_state_dict(buffer.state_dict())
    assert np.array_equal(clone.sample(5).indices, buffer.sample(5).indices)
