"""Pure math shared by every algorithm in the lab, Gym and language models alike.

No state, no modules, no environments: tensors (or arrays) in, tensors out. Each function
is tested exactly against a naive loop or a hand-computed table in tests/test_functional.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Sum = Callable[[torch.Tensor], torch.Tensor]  # a sum over processes (rl_lab.lm.distributed)

# ---------------------------------------------------------------- value targets


def td_target(
    rewards: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor, discount: float
) -> torch.Tensor:
    """One-step TD target r + discount * V(s') * (1 - terminated).

    Only termination cuts the bootstrap: a truncated episode (time limit) still has a future,
    so its final observation's value counts. `discount` is gamma**n for n-step transitions.
    """
    return rewards + discount * next_values * (1.0 - terminated.float())


def double_q_next_values(online_next_q: torch.Tensor, target_next_q: torch.Tensor) -> torch.Tensor:
    """Double DQN: the online net picks the next action, the target net values it."""
    best = online_next_q.argmax(dim=-1, keepdim=True)
    return target_next_q.gather(-1, best).squeeze(-1)


def nstep_return(rewards: list[float], gamma: float) -> float:
    """Discounted sum r0 + g*r1 + g^2*r2 + ... of a short reward window."""
    total = 0.0
    for reward in reversed(rewards):
        total = reward + gamma * total
    return total


# ---------------------------------------------------------------- advantages


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    episode_end: torch.Tensor,
    gamma: float,
    lam: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over time (dim 0), returning (advantages, returns).

    Shapes are [T, ...]. `next_values[t]` is V of the observation after step t: for a step
    that ended an episode it is the value of the *final* observation (so truncation
    bootstraps correctly); `terminated[t]` zeroes that bootstrap; `episode_end[t]`
    (terminated or truncated) stops the advantage from flowing across an episode boundary.
    `mask[t] == 0` marks padding (e.g. tokens after EOS): those steps get zero advantage and
    are skipped, the recursion passing straight through them.
    """
    not_terminal = 1.0 - terminated.float()
    not_end = 1.0 - episode_end.float()
    valid = torch.ones_like(rewards) if mask is None else mask.float()
    advantages = torch.zeros_like(rewards)
    carry = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * not_terminal[t] - values[t]
        step = delta + gamma * lam * not_end[t] * carry
        advantages[t] = step * valid[t]
        carry = torch.where(valid[t] > 0, step, carry)
    return advantages, advantages + values


# ---------------------------------------------------------------- losses


def clipped_surrogate_loss(
    new_logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped policy loss; also returns approx KL and the clipped fraction."""
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
            "clip_fraction": masked_mean(((ratio - 1.0).abs() > clip).float(), mask),
        }
    return loss, stats


def clipped_value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip: float | None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Half squared error to the returns, PPO-clipped around the rollout's values if `clip`."""
    unclipped = (new_values - returns) ** 2
    if clip is None:
        return 0.5 * masked_mean(unclipped, mask)
    moved = old_values + (new_values - old_values).clamp(-clip, clip)
    clipped = (moved - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)


def huber_loss(prediction: torch.Tensor, target: torch.Tensor, weights=None) -> torch.Tensor:
    """Smooth L1 (delta 1), optionally importance-weighted per sample."""
    per_sample = F.smooth_l1_loss(prediction, target, reduction="none")
    if weights is None:
        return per_sample.mean()
    return (per_sample * weights).mean()


# ---------------------------------------------------------------- masked statistics


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor | None = None, all_sum: Sum | None = None
) -> torch.Tensor:
    """Mean over the entries where mask is 1 (all entries without a mask).

    `all_sum` (a sum over the processes of a launch) makes it the mean over every process's
    entries: each process sends its sum and count, so all of them get the same number.
    """
    if all_sum is not None:
        mask = torch.ones_like(x) if mask is None else mask.to(x.dtype)
        total, count = all_sum(torch.stack([(x * mask).sum(), mask.sum()]))
        return total / count.clamp(min=1.0)
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def masked_var(
    x: torch.Tensor, mask: torch.Tensor | None = None, all_sum: Sum | None = None
) -> torch.Tensor:
    """Unbiased variance over the masked entries (of every process, with `all_sum`)."""
    mean = masked_mean(x, mask, all_sum)
    centered_sq = (x - mean) ** 2
    if all_sum is not None:  # the global mean first, then the squared deviations from it
        mask = torch.ones_like(x) if mask is None else mask.to(x.dtype)
        total, count = all_sum(torch.stack([(centered_sq * mask).sum(), mask.sum()]))
        return total / (count - 1).clamp(min=1.0)
    if mask is None:
        count = torch.tensor(float(x.numel()))
        return centered_sq.sum() / (count - 1).clamp(min=1.0)
    mask = mask.to(x.dtype)
    count = mask.sum()
    return (centered_sq * mask).sum() / (count - 1).clamp(min=1.0)


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    shift_mean: bool = True,
    all_sum: Sum | None = None,
) -> torch.Tensor:
    """Scale to unit variance (and zero mean unless shift_mean=False) over the masked entries
    (of every process, with `all_sum`)."""
    mean, var = masked_mean(x, mask, all_sum), masked_var(x, mask, all_sum)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    if mask is not None:
        whitened = whitened * mask.to(x.dtype)
    return whitened


def explained_variance(
    prediction: torch.Tensor, target: torch.Tensor, mask=None, all_sum: Sum | None = None
) -> float:
    """1 - Var(target - prediction) / Var(target); 1 is perfect, 0 is a constant guess."""
    target_var = masked_var(target, mask, all_sum)
    if target_var.item() == 0:
        return float("nan")
    return float(1.0 - masked_var(target - prediction, mask, all_sum) / target_var)


# ---------------------------------------------------------------- KL estimators


def kl_estimate(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-sample estimate of KL(policy || reference) from log-probs of policy samples.

    k1 = log p - log q (unbiased, can be negative); k2 = 0.5 (log p - log q)^2;
    k3 = (q/p - 1) - log(q/p) (unbiased and non-negative). See Schulman, "Approximating KL".
    """
    log_ratio = logprob - ref_logprob
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}: use k1, k2 or k3")


# ---------------------------------------------------------------- parameters and schedules


@torch.no_grad()
def polyak_update(source: torch.nn.Module, target: torch.nn.Module, tau: float) -> None:
    """target <- tau * source + (1 - tau) * target; tau = 1 is a hard copy."""
    source_params = list(source.parameters())
    target_params = list(target.parameters())
    if tau >= 1.0:
        torch._foreach_copy_(target_params, source_params)
    else:
        torch._foreach_lerp_(target_params, source_params, tau)


def linear_schedule(start: float, end: float, fraction_done: float) -> float:
    """Linear interpolation from start to end, held at end once fraction_done >= 1."""
    fraction = min(max(fraction_done, 0.0), 1.0)
    return start + (end - start) * fraction
