"""Evaluation of an LM policy on held-out prompts: reward, sentiment, KL, perplexity, diversity.

Completions are sampled the way training samples them (top_k=0, top_p=1) with a generator of
their own, so an evaluation repeats exactly and never moves the training run's random state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from envs.text import scored_texts

METRICS = ("mean_reward", "positive_fraction", "kl", "perplexity", "distinct_1", "distinct_2")


@dataclass
class LMEvalResult:
    """Metrics over held-out prompts, plus every (prompt, completion, reward) row."""

    metrics: dict[str, float]
    prompts: list[str] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)

    # The names the dashboard and the metric logger read off any evaluation result.
    @property
    def mean_return(self) -> float:
        return self.metrics["mean_reward"]

    @property
    def std_return(self) -> float:
        return float(np.std(self.rewards)) if self.rewards else 0.0

    @property
    def episodes(self) -> int:
        return len(self.rewards)

    def to_dict(self) -> dict:
        return {
            **self.metrics,
            "samples": [
                {"prompt": p, "completion": c, "reward": r}
                for p, c, r in zip(self.prompts, self.completions, self.rewards)
            ],
        }


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams of words over all texts / all n-grams (Li et al. 2016); 0 if none."""
    grams = [
        tuple(words[i : i + n])
        for words in (t.split() for t in texts)
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def evaluate_lm(
    agent,
    reward,
    prompts: list[str],
    seed: int,
    batch_size: int = 32,
    score_prompt: bool = False,
    judge=None,
) -> LMEvalResult:
    """Sample a completion per prompt and score it against the reward and the reference.

    Under a multi-process launch each process takes every world-th prompt and the rows are
    gathered back into prompt order, so every process returns the same result. A `judge`
    (another sentiment scorer, rl_lab.lm.rewards.build_judge) adds its POSITIVE fraction and
    mean score as `judge_positive_fraction` and `judge_score`.
    """
    from rl_lab.lm import distributed

    generator = torch.Generator().manual_seed(seed)
    mine = distributed.shard(list(range(len(prompts))))
    rows = []  # (prompt index, completion, KL, NLL sum, tokens, reward, positive, judged)
    for start in range(0, len(mine), batch_size):
        index = mine[start : start + batch_size]
        rollout = agent.generate([prompts[i] for i in index], generator=generator)
        ref = agent.reference_logprobs(rollout)
        mask = rollout["mask"]
        kls = ((rollout["logprobs"] - ref) * mask).sum(1).tolist()
        nlls = (-(ref * mask)).sum(1).tolist()
        tokens = mask.sum(1).tolist()
        texts = scored_texts([prompts[i] for i in index], rollout["completions"], score_prompt)
        scores, positive = reward.score_and_verdict(texts)
        scores = np.asarray(scores, dtype=np.float64).tolist()
        positive = np.asarray(positive, dtype=bool).tolist()
        judged = (
            [(float(s), bool(p)) for s, p in zip(*judge.score_and_verdict(texts))]
            if judge is not None
            else [(0.0, False)] * len(texts)
        )
        rows += zip(index, rollout["completions"], kls, nlls, tokens, scores, positive, judged)
    rows = sorted(distributed.gather(rows))
    _, completions, kls, nlls, tokens, rewards, positive, judged = (list(c) for c in zip(*rows))
    token_count = float(sum(tokens))
    metrics = {
        "mean_reward": float(np.mean(rewards)),
        "positive_fraction": float(np.mean(positive)),
        "kl": float(np.mean(kls)),
        "perplexity": math.exp(sum(nlls) / max(token_count, 1.0)),
        "distinct_1": distinct_n(completions, 1),
        "distinct_2": distinct_n(completions, 2),
        "completion_tokens": token_count / max(len(prompts), 1),
        "prompts": len(prompts),
    }
    if judge is not None:
        metrics["judge_score"] = float(np.mean([score for score, _ in judged]))
        metrics["judge_positive_fraction"] = float(np.mean([ok for _, ok in judged]))
    return LMEvalResult(metrics, list(prompts), completions, rewards)
