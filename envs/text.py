"""The text environment: prompts in, completions out, one reward per completion.

Each env step is a whole one-step episode for `num_envs` prompts at once: `reset` hands out a
batch of prompts, the agent answers with one completion per prompt, and `step` scores each
completion (or prompt + completion, the classic setup) with the reward function, ends every
episode (terminated) and hands out the next batch. Prompts are drawn without replacement from a
seeded shuffle, a new shuffle per pass. With `repeats` K each drawn prompt fills K neighbouring
slots of the batch, so an agent can compare K completions of one prompt (a group baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class TextEnv:
    """A batch of `num_envs` one-step text episodes per step, scored by `reward(texts)`."""

    def __init__(
        self,
        prompts: Sequence[str],
        reward: Callable[[list[str]], np.ndarray],
        num_envs: int,
        score_prompt: bool = False,
        repeats: int = 1,
    ):
        if not prompts:
            raise ValueError("TextEnv needs at least one prompt")
        if repeats < 1 or num_envs % repeats:
            raise ValueError(f"num_envs {num_envs} must be a multiple of repeats {repeats}")
        self.prompts = list(prompts)
        self.reward, self.num_envs, self.score_prompt = reward, num_envs, score_prompt
        self.repeats = repeats
        self.rng = np.random.default_rng(0)
        self.order: list[int] = []
        self.obs: np.ndarray | None = None

    def _next_batch(self) -> np.ndarray:
        batch = []
        while len(batch) < self.num_envs:
            if not self.order:
                self.order = self.rng.permutation(len(self.prompts)).tolist()
            batch += [self.prompts[self.order.pop()]] * self.repeats
        return np.array(batch, dtype=object)

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start a new shuffle (seeded) and hand out the first batch of prompts."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.order = []
        self.obs = self._next_batch()
        return self.obs, {}

    def step(self, completions: Sequence[str]):
        """Score the completions, end the episodes, hand out the next batch of prompts."""
        if self.obs is None:
            raise RuntimeError("call reset() before step()")
        if len(completions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} completions, got {len(completions)}")
        texts = scored_texts(list(self.obs), list(completions), self.score_prompt)
        rewards = np.asarray(self.reward(texts), dtype=np.float32)
        terminated = np.ones(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        self.obs = self._next_batch()
        return self.obs, rewards, terminated, truncated, {"texts": texts}

    def state_dict(self) -> dict:
        """The shuffle in progress and the prompts handed out, for checkpoints (JSON-safe)."""
        return {
            "rng": self.rng.bit_generator.state,
            "order": list(self.order),
            "obs": None if self.obs is None else list(self.obs),
        }

    def load_state_dict(self, state: dict) -> np.ndarray:
        """Continue the saved shuffle; return the prompts to answer next (as reset does)."""
        self.rng.bit_generator.state = state["rng"]
        self.order = [int(i) for i in state["order"]]
        self.obs = np.array(state["obs"], dtype=object)
        return self.obs

    def close(self) -> None:
        pass


def scored_texts(prompts: list[str], completions: list[str], score_prompt: bool) -> list[str]:
    """What the reward reads: the completions, or each prompt followed by its completion."""
    return [p + c for p, c in zip(prompts, completions)] if score_prompt else list(completions)
