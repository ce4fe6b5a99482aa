"""The PPO update (Schulman et al. 2017) that Gym PPO and LM PPO share: epochs of minibatch
steps on the clipped surrogate, the (clipped) value loss and an entropy bonus, the target-KL
early stop and the statistics every run logs.

What differs between the two agents stays with them, behind `Learner`: how a micro-batch's
new log-probs, values and entropy are computed (an MLP over observations, or a causal LM over
tokens with a mask), and how gradients are taken and applied (a flat Adam, or accelerate's
backward, gradient sync and clipping). Advantages, returns and the minibatch order are the
agent's too; this module sees only the tensors of each micro-batch:

    old_logprobs, old_values, advantages, returns: [B] or [B, T]
    mask: [B, T] (optional): 1 for real tokens, 0 for padding
    ref_logprobs: [B, T] (only with kl_coef > 0): the reference model's log-probs
    weight: scalar (optional): the part's share of its minibatch's loss (default 1 / parts)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from rl_lab import functional as fn

STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")


@dataclass(frozen=True)
class PPOSettings:
    """The loss weights and the loop's length (the agents map their configs onto it)."""

    epochs: int
    clip: float  # policy ratio clip epsilon
    clip_value: float  # value clip around the rollout's values (0: off)
    vf_coef: float
    ent_coef: float = 0.0
    target_kl: float = 0.0  # stop the epochs once approx KL exceeds 1.5x this (0: off)
    # Weight of a k3 estimate of KL(policy || reference) in the loss, from the micro-batch's
    # "ref_logprobs" (LM PPO's --kl-penalty loss, as TRL's GRPO pays it; 0: off).
    kl_coef: float = 0.0


class Learner(Protocol):
    """The agent-specific half of an update."""

    def evaluate(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(new log-probs, new values, mean entropy) of a micro-batch, with gradients."""
        ...

    def zero_grad(self) -> None:
        """Zero the gradients before a minibatch."""
        ...

    def backward(self, loss: torch.Tensor, sync: bool) -> None:
        """Accumulate gradients of `loss`; `sync` is False on all but a minibatch's last part."""
        ...

    def step(self) -> None:
        """Clip the accumulated gradients and take an optimizer step."""
        ...


def ppo_loss(
    settings: PPOSettings,
    batch: dict,
    logprobs: torch.Tensor,
    values: torch.Tensor,
    entropy: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one micro-batch and its terms (the STATS)."""
    mask = batch.get("mask")
    policy_loss, info = fn.clipped_surrogate_loss(
        logprobs, batch["old_logprobs"], batch["advantages"], settings.clip, mask
    )
    value_loss = fn.clipped_value_loss(
        values, batch["old_values"], batch["returns"], settings.clip_value or None, mask
    )
    loss = policy_loss + settings.vf_coef * value_loss - settings.ent_coef * entropy
    if settings.kl_coef > 0:
        kl = fn.kl_estimate(logprobs, batch["ref_logprobs"], "k3")
        loss = loss + settings.kl_coef * fn.masked_mean(kl, mask)
    terms = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy, **info}
    return loss, terms


def ppo_update(
    settings: PPOSettings,
    minibatches: Callable[[], Iterable[Sequence[dict]]],
    learner: Learner,
) -> dict[str, float]:
    """Epochs of optimizer steps; returns the mean of each term as "losses/..." and the number
    of optimizer steps taken as "charts/gradient_steps".

    `minibatches()` is called once per epoch and yields minibatches in that epoch's order, each
    a list of micro-batches (one, without gradient accumulation) whose gradients add up into
    one optimizer step.
    """
    stats: dict[str, list[torch.Tensor]] = {key: [] for key in STATS}
    steps = 0
    for _ in range(settings.epochs):
        for minibatch in minibatches():
            learner.zero_grad()
            for k, batch in enumerate(minibatch):
                loss, terms = ppo_loss(settings, batch, *learner.evaluate(batch))
                if settings.target_kl > 0 and terms["approx_kl"] > 1.5 * settings.target_kl:
                    # This step would move the policy too far: drop it and stop the epochs.
                    return summary(stats, steps)
                # A part's share of the minibatch: its "weight" where the learner sets one (by
                # tokens, across processes), else an equal share.
                share = batch.get("weight", 1.0 / len(minibatch))
                learner.backward(loss * share, sync=k == len(minibatch) - 1)
                for key in STATS:
                    stats[key].append(terms[key].detach())
            learner.step()
            steps += 1
    return summary(stats, steps)


def summary(stats: dict[str, list[torch.Tensor]], steps: int) -> dict[str, float]:
    metrics = {
        f"losses/{key}": float(torch.stack(values).float().mean()) if values else float("nan")
        for key, values in stats.items()
    }
    metrics["charts/gradient_steps"] = float(steps)
    return metrics
