"""The text environment's reset/step contract: one-step episodes over batches of prompts."""

from __future__ import annotations

import numpy as np
import pytest

from envs.text import TextEnv

PROMPTS = [f"prompt {i}" for i in range(10)]


def length_reward(texts):
    return np.array([len(t) for t in texts], dtype=np.float32)


def test_reset_hands_out_a_batch_of_prompts():
    env = TextEnv(PROMPTS, length_reward, num_envs=4)
    obs, info = env.reset(seed=0)
    assert obs.shape == (4,) and obs.dtype == object and info == {}
    assert set(obs) <= set(PROMPTS) and len(set(obs)) == 4


def test_step_scores_prompt_plus_completion_and_ends_every_episode():
    env = TextEnv(PROMPTS, length_reward, num_envs=3, score_prompt=True)
    obs, _ = env.reset(seed=1)
    completions = ["!", "!!", "!!!"]
    next_obs, rewards, terminated, truncated, info = env.step(completions)
    assert info["texts"] == [p + c for p, c in zip(obs, completions)]
    assert rewards.dtype == np.float32
    assert rewards.tolist() == [len(p) + len(c) for p, c in zip(obs, completions)]
    assert terminated.all() and not truncated.any()
    assert next_obs.shape == (3,)


def test_by_default_only_the_completion_is_scored():
    env = TextEnv(PROMPTS, length_reward, num_envs=2)
    env.reset(seed=0)
    _, rewards, *_, info = env.step(["ab", "abcd"])
    assert info["texts"] == ["ab", "abcd"] and rewards.tolist() == [2.0, 4.0]


def test_prompts_come_without_replacement_and_seeds_repeat():
    env = TextEnv(PROMPTS, length_reward, num_envs=5)
    first, _ = env.reset(seed=3)
    second, *_ = env.step(["x"] * 5)
    assert sorted(list(first) + list(second)) == sorted(PROMPTS)  # one pass covers them all
    again, _ = TextEnv(PROMPTS, length_reward, num_envs=5).reset(seed=3)
    assert list(again) == list(first)
    other, _ = TextEnv(PROMPTS, length_reward, num_envs=5).reset(seed=4)
    assert list(other) != list(first)


def test_batches_larger_than_the_prompt_set_wrap_around():
    env = TextEnv(PROMPTS[:3], length_reward, num_envs=7)
    obs, _ = env.reset(seed=0)
    assert len(obs) == 7 and set(obs) == set(PROMPTS[:3])


def test_repeats_put_each_prompt_in_neighbouring_slots():
    env = TextEnv(PROMPTS, length_reward, num_envs=6, repeats=3)
    obs, _ = env.reset(seed=0)
    first, second = list(obs[:3]), list(obs[3:])
    assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] != second[0]
    plain, _ = TextEnv(PROMPTS, length_reward, num_envs=2).reset(seed=0)
    assert [first[0], second[0]] == list(plain)  # the same shuffle, each prompt K times
    with pytest.raises(ValueError):
        TextEnv(PROMPTS, length_reward, num_envs=5, repeats=2)


def test_misuse_is_an_error():
    with pytest.raises(ValueError):
        TextEnv([], length_reward, num_envs=2)
    env = TextEnv(PROMPTS, length_reward, num_envs=2)
    with pytest.raises(RuntimeError):
        env.step(["a", "b"])
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(["only one"])
