"""Actor-critic heads: hand-written log-prob/entropy math against torch.distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.actor_critic import CategoricalActorCritic, GaussianActorCritic


@pytest.mark.parametrize("log_std_init", [-1.5, 0.0, 0.7])
def test_gaussian_log_prob_and_entropy_match_torch(log_std_init):
    torch.manual_seed(0)
    net = GaussianActorCritic(3, 2, (16, 16), log_std_init=log_std_init)
    with torch.no_grad():
        net.log_std.add_(torch.tensor([0.3, -0.2]))  # distinct per-dimension stds
        net.policy_head.weight.normal_()  # means far from zero
    obs, actions = torch.randn(32, 3), torch.randn(32, 2) * 2
    log_prob, entropy = net.log_prob_entropy(obs, actions)
    reference = net.distribution(obs)
    torch.testing.assert_close(log_prob, reference.log_prob(actions))
    torch.testing.assert_close(entropy, reference.entropy())


def test_categorical_log_prob_and_entropy_match_torch():
    torch.manual_seed(0)
    net = CategoricalActorCritic(4, 5, (16,))
    with torch.no_grad():
        net.policy_head.weight.normal_()
    obs, actions = torch.randn(32, 4), torch.randint(0, 5, (32,))
    log_prob, entropy = net.log_prob_entropy(obs, actions)
    reference = net.distribution(obs)
    torch.testing.assert_close(log_prob, reference.log_prob(actions))
    torch.testing.assert_close(entropy, reference.entropy())


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])  # gelu: the torch fallback
@pytest.mark.parametrize("kind", [CategoricalActorCritic, GaussianActorCritic])
def test_numpy_acting_agrees_with_the_torch_update_path(kind, activation):
    net = kind(4, 3, (16, 16), activation)
    with torch.no_grad():
        net.policy_head.weight.normal_()
    obs = torch.randn(64, 4)
    actions, log_prob, value = net.act_numpy(obs.numpy(), np.random.default_rng(0))
    torch_log_prob, entropy, torch_value = net.evaluate_actions(obs, torch.from_numpy(actions))
    torch.testing.assert_close(torch.from_numpy(log_prob), torch_log_prob, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.from_numpy(value), torch_value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        torch.from_numpy(net.value_numpy(obs.numpy())), net.value(obs), atol=1e-5, rtol=1e-5
    )
    assert log_prob.shape == value.shape == entropy.shape == (64,)


def test_numpy_sampling_follows_the_distribution_and_the_rng():
    net = CategoricalActorCritic(2, 3, (8,))
    with torch.no_grad():
        net.policy_head.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
    obs = np.zeros((20_000, 2), dtype=np.float32)
    actions = net.act_numpy(obs, np.random.default_rng(5))[0]
    frequencies = np.bincount(actions, minlength=3) / len(actions)
    expected = net.distribution(torch.from_numpy(obs[:1])).probs[0].detach().numpy()
    np.testing.assert_allclose(frequencies, expected, atol=0.01)
    np.testing.assert_array_equal(actions, net.act_numpy(obs, np.random.default_rng(5))[0])

    gaussian = GaussianActorCritic(2, 2, (8,), log_std_init=-1.0)
    samples = gaussian.act_numpy(obs, np.random.default_rng(0))[0]
    mean = gaussian.greedy(torch.from_numpy(obs[:1]))[0].detach().numpy()
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(samples.std(0), np.exp(-1.0), rtol=0.02)


def test_greedy_is_the_mode():
    obs = torch.randn(6, 2)
    gaussian, discrete = GaussianActorCritic(2, 2), CategoricalActorCritic(2, 4)
    torch.testing.assert_close(gaussian.greedy(obs), gaussian.distribution(obs).mean)
    torch.testing.assert_close(discrete.greedy(obs), discrete.distribution(obs).probs.argmax(-1))
    np.testing.assert_array_equal(discrete.greedy_numpy(obs.numpy()), discrete.greedy(obs).numpy())


def test_orthogonal_init_gains():
    net = GaussianActorCritic(8, 2, (64, 64), log_std_init=-0.5)
    policy, value = net.policy_head.weight, net.value_head.weight
    # Orthogonal rows scaled by the gain: W W^T = gain^2 I.
    torch.testing.assert_close(policy @ policy.T, 0.01**2 * torch.eye(2), atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(value @ value.T, torch.eye(1))
    assert not net.policy_head.bias.any() and not net.value_head.bias.any()
    torch.testing.assert_close(net.log_std.detach(), torch.full((2,), -0.5))


def test_shared_trunk_has_one_trunk_and_no_duplicate_tensors():
    separate, shared = CategoricalActorCritic(4, 2), CategoricalActorCritic(4, 2, shared_trunk=True)
    assert shared.value_trunk is None
    count = lambda net: sum(p.numel() for p in net.parameters())
    assert count(shared) == count(separate) - count(separate.value_trunk)
    pointers = [tensor.data_ptr() for tensor in shared.state_dict().values()]
    assert len(pointers) == len(set(pointers))
    obs = torch.randn(5, 4)
    torch.testing.assert_close(shared(obs)[1], shared.value(obs))
