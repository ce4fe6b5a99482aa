"""Pure math against naive loops and hand-computed numbers."""

import numpy as np
import pytest
import torch
from torch import nn

from rl_lab import functional as fn


def test_td_target_cuts_bootstrap_only_on_termination():
    rewards = torch.tensor([1.0, 1.0, 1.0])
    next_values = torch.tensor([10.0, 10.0, 10.0])
    terminated = torch.tensor([0.0, 1.0, 0.0])
    # the third row is a truncation (not terminated): it still bootstraps
    expected = torch.tensor([1 + 0.9 * 10, 1.0, 1 + 0.9 * 10])
    assert torch.allclose(fn.td_target(rewards, next_values, terminated, 0.9), expected)


def test_td_target_with_per_sample_nstep_discount():
    discount = torch.tensor([0.9**3, 0.9])
    out = fn.td_target(
        torch.tensor([2.71, 1.0]), torch.tensor([5.0, 5.0]), torch.tensor([0.0, 0.0]), discount
    )
    assert torch.allclose(out, torch.tensor([2.71 + 0.729 * 5, 1 + 0.9 * 5]))


def test_double_q_uses_online_argmax_and_target_value():
    online = torch.tensor([[1.0, 5.0, 2.0], [3.0, 0.0, 1.0]])
    target = torch.tensor([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])
    assert fn.double_q_next_values(online, target).tolist() == [20.0, 40.0]
    # plain DQN would have taken the target's own max: 30 and 60


def test_nstep_return_hand_table():
    assert fn.nstep_return([1.0, 2.0, 3.0], 0.5) == pytest.approx(1 + 0.5 * 2 + 0.25 * 3)
    assert fn.nstep_return([4.0], 0.9) == 4.0
    assert fn.nstep_return([], 0.9) == 0.0


def test_polyak_and_hard_update():
    source, target = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        for p in source.parameters():
            p.fill_(1.0)
        for p in target.parameters():
            p.fill_(0.0)
    fn.polyak_update(source, target, 0.25)
    assert all(torch.allclose(p, torch.full_like(p, 0.25)) for p in target.parameters())
    fn.polyak_update(source, target, 1.0)
    assert all(torch.allclose(p, torch.ones_like(p)) for p in target.parameters())


def test_linear_schedule_clamps():
    assert fn.linear_schedule(1.0, 0.1, 0.0) == 1.0
    assert fn.linear_schedule(1.0, 0.1, 0.5) == pytest.approx(0.55)
    assert fn.linear_schedule(1.0, 0.1, 3.0) == pytest.approx(0.1)


def test_masked_mean_and_whiten_ignore_padding():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert fn.masked_mean(x, mask).item() == pytest.approx(2.0)
    assert fn.masked_var(x, mask).item() == pytest.approx(1.0)
    white = fn.masked_whiten(x, mask)
    assert white[3].item() == 0.0
    assert white[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-4)


def test_kl_estimators():
    logp = torch.log(torch.tensor([0.5, 0.25]))
    logq = torch.log(torch.tensor([0.25, 0.5]))
    assert torch.allclose(fn.kl_estimate(logp, logq, "k1"), logp - logq)
    assert torch.allclose(fn.kl_estimate(logp, logp, "k3"), torch.zeros(2))
    k3 = fn.kl_estimate(logp, logq, "k3")
    assert (k3 >= 0).all()
    with pytest.raises(ValueError):
        fn.kl_estimate(logp, logq, "k9")


def test_huber_is_quadratic_then_linear():
    pred, target = torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0])
    assert fn.huber_loss(pred, target).item() == pytest.approx((0.125 + 2.5) / 2)
    weighted = fn.huber_loss(pred, target, torch.tensor([2.0, 0.0]))
    assert weighted.item() == pytest.approx(0.125)


def test_explained_variance():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert fn.explained_variance(target, target) == pytest.approx(1.0)
    assert fn.explained_variance(torch.full_like(target, 2.5), target) == pytest.approx(0.0)
    assert np.isnan(fn.explained_variance(target, torch.ones(4)))
