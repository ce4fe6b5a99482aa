"""Proximal Policy Optimization (Schulman et al. 2017) for Gymnasium tasks.

Clipped surrogate objective, GAE(lambda) advantages, optional clipped value loss, entropy
bonus, minibatch epochs, linear LR and clip annealing, gradient-norm clipping, target-KL early
stop, and running observation / reward normalisation held by the agent (so checkpoints and
evaluation use the same statistics). Discrete and Box action spaces. The whole update rule
is `PPOAgent.update`, its epochs the
shared `rl_lab.ppo_update`.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd

from envs.observations import require_box
from policies.actor_critic import ActorCritic, CategoricalActorCritic, GaussianActorCritic
from policies.mlp import flat_size
from rl_lab import functional as fn
from rl_lab.buffers import RolloutBuffer, Transition
from rl_lab.config import option, validate
from rl_lab.errors import UserError
from rl_lab.optim import OPTIMIZERS, make_adam
from rl_lab.ppo_update import PPOSettings, ppo_update
from rl_lab.search import Choice, Range


@dataclass
class PPOConfig:
    """PPO hyperparameters (defaults are Stable-Baselines3's, a reasonable start anywhere)."""

    lr: float = option(3e-4, "Adam learning rate", min=0.0, search=Range(1e-4, 3e-3, log=True))
    n_steps: int = option(
        2048,
        "env steps per env in each rollout",
        min=1,
        search=Choice(16, 32, 64, 128, 256, 512, 1024, 2048),
    )
    batch_size: int = option(
        64,
        "minibatch size (transitions per gradient step)",
        min=1,
        search=Choice(32, 64, 128, 256),
    )
    n_epochs: int = option(10, "passes over each rollout", min=1, search=Choice(1, 3, 5, 10))
    gamma: float = option(
        0.99,
        "discount factor",
        min=0.0,
        max=1.0,
        search=Choice(0.9, 0.95, 0.98, 0.99, 0.995, 0.999),
    )
    gae_lambda: float = option(
        0.95,
        "GAE lambda: 0 is one-step TD, 1 is Monte Carlo",
        min=0.0,
        max=1.0,
        search=Choice(0.8, 0.9, 0.95, 0.98, 1.0),
    )
    clip_range: float = option(
        0.2, "policy ratio clip epsilon", min=0.0, search=Choice(0.1, 0.2, 0.3)
    )
    clip_range_vf: float = option(0.0, "value clip around the rollout's values (0: off)", min=0.0)
    ent_coef: float = option(
        0.0, "entropy bonus weight", min=0.0, search=Range(1e-6, 0.05, log=True)
    )
    vf_coef: float = option(
        1.0,
        "value loss weight; the loss is 0.5*squared error, so 1.0 "
        "here equals Stable-Baselines3's 0.5",
        min=0.0,
    )
    max_grad_norm: float = option(
        0.5, "gradient clipping norm (0: off)", min=0.0, search=Choice(0.3, 0.5, 1.0, 5.0)
    )
    normalize_advantage: bool = option(True, "whiten advantages per minibatch")
    target_kl: float = option(
        0.0, "stop the epochs once approx KL exceeds 1.5x this (0: off)", min=0.0
    )
    anneal_lr: bool = option(False, "decay the learning rate linearly to 0 over the run")
    anneal_clip: bool = option(False, "decay the clip range linearly to 0 over the run")
    normalize_obs: bool = option(False, "normalise observations by running mean/std")
    normalize_reward: bool = option(
        False, "scale rewards by the std of a running discounted return"
    )
    hidden: tuple = option((64, 64), "hidden layer sizes, comma separated")
    activation: str = option("tanh", "hidden activation", choices=("relu", "tanh", "gelu"))
    shared_trunk: bool = option(False, "one trunk for policy and value instead of two")
    log_std_init: float = option(0.0, "initial log std of Gaussian (Box) policies")
    use_sde: bool = option(
        False,
        "gSDE: Box exploration noise linear in the policy's features, its weights resampled "
        "every --sde-sample-freq steps (Stable-Baselines3's; --impl sb3 only)",
    )
    sde_sample_freq: int = option(
        -1, "with --use-sde: env steps between noise resamples (-1: once per rollout)", min=-1
    )
    adam_eps: float = option(1e-5, "Adam epsilon", min=0.0)
    optimizer: str = option(
        "flat",
        "Adam implementation: flat (the lab's one-buffer Adam), foreach or fused (torch's)",
        choices=OPTIMIZERS,
    )
    numpy_acting: bool = option(
        True, "act in numpy on views of the weights (faster for a few rows); off: torch"
    )

    def __post_init__(self):
        validate(self)


def rms_state(rms: RunningMeanStd) -> dict:
    return {"mean": rms.mean, "var": rms.var, "count": rms.count}


def load_rms_state(rms: RunningMeanStd, state: dict) -> None:
    rms.mean, rms.var = np.asarray(state["mean"]), np.asarray(state["var"])
    rms.count = float(state["count"])


CLIP_OBS, CLIP_REWARD, NORM_EPS = 10.0, 10.0, 1e-8


class PPOAgent:
    """Collects a rollout of n_steps per env (act/observe), then runs `update()` on it."""

    def __init__(
        self,
        config: PPOConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int,
        total_steps: int,
        seed: int,
    ):
        c = config
        require_box(observation_space, "ppo")
        if c.use_sde:
            raise UserError(
                "--use-sde: the lab's PPO has no gSDE exploration; run it with --impl sb3 "
                "or drop --use-sde"
            )
        rollout = c.n_steps * num_envs
        if c.batch_size > rollout:
            raise UserError(
                f"--batch-size {c.batch_size} exceeds the rollout (--n-steps "
                f"{c.n_steps} x --num-envs {num_envs} = {rollout}): lower it"
            )
        self.config, self.num_envs, self.total_steps = c, num_envs, total_steps
        obs_size, obs_shape = flat_size(observation_space.shape), observation_space.shape
        with torch.random.fork_rng():  # seeded init without touching the global rng
            torch.manual_seed(seed)
            self.net = self._build_net(action_space, obs_size)
        self.net.numpy_acting = c.numpy_acting
        self.optimizer = make_adam(self.net, c.lr, c.adam_eps, c.optimizer)
        self.buffer = RolloutBuffer(
            c.n_steps, num_envs, obs_shape, self.action_shape, self.action_dtype, seed=seed + 1
        )
        self.rng = np.random.default_rng(seed + 2)  # action sampling
        self.obs_rms = RunningMeanStd(shape=obs_shape)  # Gymnasium's (Chan's parallel update)
        self.return_rms = RunningMeanStd()
        self.discounted_return = np.zeros(num_envs)
        self.env_steps = 0
        self.updates = 0
        self.gradient_steps = 0  # optimizer steps over all updates
        self._pending: tuple | None = None  # what act() saw and did, until observe()
        self._next_obs = None

    def _build_net(self, action_space: gym.Space, obs_size: int) -> ActorCritic:
        c = self.config
        if isinstance(action_space, gym.spaces.Discrete):
            self.action_shape, self.action_dtype = (), np.int64
            self.low = self.high = None
            return CategoricalActorCritic(
                obs_size, int(action_space.n), c.hidden, c.activation, c.shared_trunk
            )
        if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.action_shape, self.action_dtype = action_space.shape, np.float32
            self.low = action_space.low.astype(np.float32)
            self.high = action_space.high.astype(np.float32)
            return GaussianActorCritic(
                obs_size,
                action_space.shape[0],
                c.hidden,
                c.activation,
                c.shared_trunk,
                c.log_std_init,
            )
        raise UserError(
            f"ppo needs a Discrete or 1-D Box action space, this task has {action_space}"
        )

    # -------------------------------------------------------------- acting

    def normalize(self, obs) -> np.ndarray:
        """Observations as the network sees them (running statistics, if enabled)."""
        obs = np.asarray(obs, dtype=np.float32)
        if self.config.normalize_obs:
            scaled = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + NORM_EPS)
            obs = np.clip(scaled, -CLIP_OBS, CLIP_OBS).astype(np.float32)
        return obs

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Actions as the env takes them: Gaussian samples clipped to the Box bounds."""
        return actions if self.low is None else np.clip(actions, self.low, self.high)

    def act(self, obs, *, explore: bool = True) -> np.ndarray:
        if not explore:  # evaluation: greedy, with frozen normalisation statistics
            return self.to_env(self.net.greedy_numpy(self.normalize(obs)))
        if self.config.normalize_obs:
            self.obs_rms.update(np.asarray(obs, dtype=np.float64))
        x = self.normalize(obs)
        actions, logprobs, values = self.net.act_numpy(x, self.rng)
        self._pending = (x, actions, logprobs, values)
        return self.to_env(actions)

    def observe(self, batch: Transition) -> None:
        obs, actions, logprobs, values = self._pending
        ended = np.logical_or(batch.terminated, batch.truncated)
        rewards = self.scale_rewards(np.asarray(batch.reward, dtype=np.float64), ended)
        # Truncated episodes bootstrap from V(final obs); terminated ones need no value.
        end_values = np.zeros(self.num_envs, dtype=np.float32)
        truncated_only = np.flatnonzero(
            np.logical_and(batch.truncated, np.logical_not(batch.terminated))
        )
        if len(truncated_only):
            final_obs = np.asarray(batch.next_obs)[truncated_only]
            end_values[truncated_only] = self.net.value_numpy(self.normalize(final_obs))
        self.buffer.add(
            obs, actions, logprobs, values, rewards, batch.terminated, batch.truncated, end_values
        )
        self._next_obs = batch.next_obs
        self.env_steps += self.num_envs

    def scale_rewards(self, rewards: np.ndarray, ended: np.ndarray) -> np.ndarray:
        """Divide by the std of a running discounted return (Gymnasium's NormalizeReward)."""
        if not self.config.normalize_reward:
            return rewards
        self.discounted_return = self.discounted_return * self.config.gamma + rewards
        self.return_rms.update(self.discounted_return)
        self.discounted_return[ended] = 0.0
        scaled = rewards / np.sqrt(self.return_rms.var + NORM_EPS)
        return np.clip(scaled, -CLIP_REWARD, CLIP_REWARD)

    def ready(self) -> bool:
        return self.buffer.full()

    # -------------------------------------------------------------- learning

    def update(self) -> dict[str, float]:
        c = self.config
        remaining = max(1.0 - self.env_steps / self.total_steps, 0.0)
        lr = c.lr * remaining if c.anneal_lr else c.lr
        clip = c.clip_range * remaining if c.anneal_clip else c.clip_range
        self.optimizer.lr = lr

        # 1. Advantages and returns, bootstrapping from where the rollout stopped.
        last_values = self.net.value_numpy(self.normalize(self._next_obs))
        self.buffer.compute_advantages(last_values, c.gamma, c.gae_lambda)

        # 2. Epochs of minibatch steps on the clipped objective (rl_lab.ppo_update).
        settings = PPOSettings(
            epochs=c.n_epochs,
            clip=clip,
            clip_value=c.clip_range_vf,
            vf_coef=c.vf_coef,
            ent_coef=c.ent_coef,
            target_kl=c.target_kl,
        )
        metrics = ppo_update(settings, self.minibatches, self)

        self.buffer.reset()
        self.updates += 1
        self.gradient_steps += int(metrics["charts/gradient_steps"])
        metrics["losses/explained_variance"] = fn.explained_variance(
            torch.from_numpy(self.buffer.values).flatten(), self.buffer.returns.flatten()
        )
        metrics["charts/learning_rate"] = lr
        metrics["charts/clip_range"] = clip
        if isinstance(self.net, GaussianActorCritic):
            metrics["charts/action_std"] = float(self.net.log_std.detach().exp().mean())
        return metrics

    # The Learner half of rl_lab.ppo_update: what the shared update asks of this agent.

    def minibatches(self):
        """One epoch's minibatches (each one micro-batch), advantages whitened per minibatch."""
        for batch in self.buffer.minibatches(self.config.batch_size):
            advantages = batch["advantages"]
            if self.config.normalize_advantage and len(advantages) > 1:
                advantages = fn.masked_whiten(advantages)
            batch["advantages"] = advantages
            batch["old_logprobs"], batch["old_values"] = batch["logprobs"], batch["values"]
            yield [batch]

    def evaluate(self, batch: dict):
        logprobs, entropy, values = self.net.evaluate_actions(batch["obs"], batch["actions"])
        return logprobs, values, entropy.mean()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def backward(self, loss: torch.Tensor, sync: bool) -> None:
        loss.backward()

    def step(self) -> None:
        if self.config.max_grad_norm > 0:
            self.optimizer.clip_grad_norm(self.config.max_grad_norm)
        self.optimizer.step()

    # -------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        return {
            # Cloned: the parameters are views of one flat buffer, which safetensors refuses.
            "net": {k: v.clone() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "buffer": self.buffer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "obs_rms": rms_state(self.obs_rms),
            "return_rms": rms_state(self.return_rms),
            "discounted_return": self.discounted_return,
            "counters": {
                "env_steps": self.env_steps,
                "updates": self.updates,
                "gradient_steps": self.gradient_steps,
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer.load_state_dict(state["buffer"])
        self.rng.bit_generator.state = state["rng"]
        load_rms_state(self.obs_rms, state["obs_rms"])
        load_rms_state(self.return_rms, state["return_rms"])
        self.discounted_return = np.array(state["discounted_return"], dtype=np.float64)
        for name, value in state["counters"].items():
            setattr(self, name, int(value))


Config = PPOConfig

# Tuned defaults per task (RunConfig fields under "run", PPOConfig fields under "algo"),
# starting from rl-zoo3's hyperparameters (its vf_coef doubled: see PPOConfig.vf_coef).
LUNARLANDER = {
    "run": {"total_steps": 1_000_000, "num_envs": 16, "eval_interval": 50_000, "eval_episodes": 10},
    "algo": {
        "n_steps": 1024,
        "batch_size": 64,
        "n_epochs": 4,
        "gamma": 0.999,
        "gae_lambda": 0.98,
        "ent_coef": 0.01,
    },
}

PRESETS: dict[str, dict[str, dict]] = {
    "cartpole": {
        # Tuned for wall time to solve: small rollouts, few cheap epochs; usually 4-9k steps.
        "run": {
            "total_steps": 100_000,
            "num_envs": 8,
            "eval_interval": 1_000,
            "stop_when_solved": True,
        },
        "algo": {"lr": 1e-3, "n_steps": 32, "batch_size": 128, "n_epochs": 5},
    },
    "acrobot": {
        # rl-zoo3's (experiments/presets/rl-zoo3/ppo-acrobot.json) updated 8x as often: rollouts
        # of 8 envs x 64 steps instead of 16 x 256, minibatches of 128 (half the gradient steps
        # per env step), lr 1e-3. It solved in an IQM of 13k steps (2.2 s) on seeds 0-9; the
        # zoo's settings took 23k (3.9 s) on seeds 0-4.
        "run": {
            "total_steps": 200_000,
            "num_envs": 8,
            "eval_interval": 5_000,
            "eval_episodes": 10,
            "stop_when_solved": True,
            "solved_patience": 2,  # as DQN's: two solving evaluations in a row
        },
        "algo": {
            "lr": 1e-3,
            "n_steps": 64,
            "batch_size": 128,
            "n_epochs": 4,
            "gae_lambda": 0.94,
            "normalize_obs": True,
            "normalize_reward": True,
        },
    },
    "mountaincar": {
        "run": {
            "total_steps": 1_000_000,
            "num_envs": 16,
            "eval_interval": 50_000,
            "eval_episodes": 10,
        },
        "algo": {
            "n_steps": 16,
            "n_epochs": 4,
            "gae_lambda": 0.98,
            "normalize_obs": True,
            "normalize_reward": True,
        },
    },
    "pendulum": {
        # rl-zoo3's (without gSDE), with 4x larger minibatches, LR annealing and no observation
        # normalisation: on seed 0 the zoo's constant LR and batch of 64 collapsed after
        # reaching about -150, and normalised observations left seed 2 stuck near -500. Then
        # rollouts of 4 x 256 (four times the updates, the same gradient steps per env step),
        # an initial std of e (log-std 1: wide swings, which the [-2, 2] bounds clip) and lr
        # 2e-3, evaluated every 10k steps: on seeds 26-33 an IQM of 20k steps and 2.1 s to
        # solve against 30k and 2.8-3.0 s with either change alone; the 4 x 1024 rollouts took
        # 65k steps on seeds 10-17 (experiments/results/compare/ppo-pendulum-tuning{,-2,-3}/;
        # README).
        "run": {
            "total_steps": 200_000,
            "num_envs": 4,
            "eval_interval": 10_000,
            "eval_episodes": 10,
        },
        "algo": {
            "lr": 2e-3,
            "n_steps": 256,
            "batch_size": 256,
            "gamma": 0.9,
            "n_epochs": 10,
            "anneal_lr": True,
            "normalize_reward": True,
            "log_std_init": 1.0,
        },
    },
    "mountaincar-continuous": {
        # rl-zoo3's, which relies on gSDE exploration (not implemented here): without it the
        # tiny initial std rarely finds the goal; unmeasured beyond a smoke run.
        "run": {"total_steps": 20_000, "num_envs": 1, "eval_interval": 5_000, "eval_episodes": 10},
        "algo": {
            "lr": 7.77e-5,
            "n_steps": 8,
            "batch_size": 8,
            "gamma": 0.9999,
            "gae_lambda": 0.9,
            "ent_coef": 0.00429,
            "clip_range": 0.1,
            "n_epochs": 10,
            "max_grad_norm": 5.0,
            "vf_coef": 0.38,
            "log_std_init": -3.29,
            "normalize_obs": True,
            "normalize_reward": True,
        },
    },
    "lunarlander": {
        # rl-zoo3's (LUNARLANDER, experiments/presets/rl-zoo3/ppo-lunarlander.json) with
        # rollouts of 16 x 256 instead of 16 x 1024, minibatches of 128 (half the gradient
        # steps per env step), evaluation every 10k steps, stop after two solving evaluations;
        # chosen among four candidates on seeds 0-2, where it trained to solve in 56-78 s
        # against 87-107 s for the zoo's settings. Then lr 1e-3 (was 5e-4): on seeds 10-13 an
        # IQM of 336k steps and 25.6 s to solve against 430k and 32.4 s, at the same final
        # return (experiments/results/compare/ppo-lunarlander-tuning/; README). Then four
        # solving evaluations before stopping (was two): on seeds 14-29 an IQM final return of
        # 232 against 219 (three: 226), the same time to first solve
        # (experiments/results/compare/ppo-lunarlander-tuning-patience/).
        "run": {
            **LUNARLANDER["run"],
            "eval_interval": 10_000,
            "stop_when_solved": True,
            "solved_patience": 4,
        },
        "algo": {**LUNARLANDER["algo"], "n_steps": 256, "batch_size": 128, "lr": 1e-3},
    },
}
# The LunarLander preset (rl-zoo3 uses one set of settings for both action spaces), stopping
# after three solving evaluations (picked when LunarLander's stopped after two): with two,
# policies that had just reached 200 ended at a final return of 177 (IQM, seeds 10-13), with
# three 236. On seeds 10-13 it solved in an IQM of 11.3 s against 35.7 s for the zoo's settings
# on the same clock (experiments/results/compare/ppo-lunarlander-continuous-tuning/).
PRESETS["lunarlander-continuous"] = {
    "run": {**PRESETS["lunarlander"]["run"], "solved_patience": 3},
    "algo": dict(PRESETS["lunarlander"]["algo"]),
}


def make_agent(
    config: PPOConfig, observation_space, action_space, num_envs: int, total_steps: int, seed: int
) -> PPOAgent:
    """The agent for one run (the runner's entry point)."""
    return PPOAgent(config, observation_space, action_space, num_envs, total_steps, seed)
