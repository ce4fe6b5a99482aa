"""`--impl sb3`: Stable-Baselines3's DQN and PPO inside the lab's experiment.

The lab's preset and flags (DQNConfig / PPOConfig) are mapped to SB3's arguments; where SB3
has no equivalent the run is refused in one line, or mapped to the closest setting and the
mapping named in config.json ("sb3": {"arguments", "mapping"}). Everything around SB3's
`learn()` is the lab's: run directory, dashboard, MetricLogger (metrics.jsonl and
TensorBoard), evaluation harness and seeds, eval.json, summary.md, curve.png, checkpoints
and --resume. An SB3 callback (`LabCallbacks`) feeds the lab's callbacks.

Checkpoints are the lab's (safetensors + JSON, nothing unpickled): SB3's policy and
optimizer state dicts, the replay buffer's arrays (DQN), the normalisation statistics
(PPO) and SB3's counters. SB3 draws from the global numpy/torch generators, so a resumed
run continues the schedule and the learning but does not repeat an uninterrupted run
bit for bit (the lab's own agents do).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from envs.tasks import make_env
from rl_lab import checkpoint
from rl_lab.algos.dqn import DQNConfig
from rl_lab.algos.ppo import CLIP_OBS, CLIP_REWARD, PPOConfig
from rl_lab.errors import UserError
from rl_lab.loop import Callback, CtrlC, RunContext
from rl_lab.runner import Experiment

ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU}

# SB3 logger keys -> the lab's metric names (the dashboard and TensorBoard group by prefix).
METRIC_NAMES = {
    "rollout/exploration_rate": "charts/epsilon",
    "train/policy_gradient_loss": "losses/policy_loss",
    "train/value_loss": "losses/value_loss",
    "train/approx_kl": "losses/approx_kl",
    "train/clip_fraction": "losses/clip_fraction",
    "train/explained_variance": "losses/explained_variance",
    "train/learning_rate": "charts/learning_rate",
    "train/clip_range": "charts/clip_range",
    "train/std": "charts/action_std",
}


def no_clip(max_grad_norm: float) -> float:
    """The lab's 0 means "do not clip"; SB3 always clips, so clip at infinity."""
    return max_grad_norm if max_grad_norm > 0 else math.inf


def dqn_arguments(c: DQNConfig, num_envs: int) -> tuple[dict, list[str]]:
    """SB3 DQN keyword arguments for a lab DQNConfig, and the mappings that are not 1:1."""
    if c.dueling:
        raise UserError("SB3's DQN has no dueling head: drop --dueling or use --impl lab")
    if c.prioritized:
        raise UserError("SB3's DQN has no prioritized replay: drop --prioritized or use --impl lab")
    notes = []
    if c.double:
        notes.append("double: SB3's DQN has no double-DQN targets; it uses max_a Q_target")
    # The lab counts target syncs in gradient steps, SB3 in env steps.
    target_env_steps = max(1, round(c.target_update_interval * c.train_freq / c.gradient_steps))
    notes.append(
        f"target_update_interval: {c.target_update_interval} gradient steps -> "
        f"{target_env_steps} env steps (x train_freq / gradient_steps)"
    )
    # The lab's train_freq counts env steps over all envs; SB3's counts vector steps.
    train_freq = max(1, c.train_freq // num_envs)
    if num_envs > 1:
        notes.append(f"train_freq: {c.train_freq} env steps -> {train_freq} vector steps")
    if c.max_grad_norm == 0:
        notes.append("max_grad_norm: 0 (off) -> inf (SB3 always clips)")
    notes.append("optimizer: torch.optim.Adam (eps 1e-8, as the lab's FlatAdam)")
    arguments = dict(
        learning_rate=c.lr,
        buffer_size=c.buffer_size,
        learning_starts=c.learning_starts,
        batch_size=c.batch_size,
        tau=c.tau,
        gamma=c.gamma,
        train_freq=train_freq,
        gradient_steps=c.gradient_steps,
        n_steps=c.n_step,
        target_update_interval=target_env_steps,
        exploration_fraction=c.exploration_fraction,
        exploration_initial_eps=c.epsilon_start,
        exploration_final_eps=c.epsilon_end,
        max_grad_norm=no_clip(c.max_grad_norm),
        policy_kwargs=dict(net_arch=list(c.hidden), activation_fn=ACTIVATIONS[c.activation]),
    )
    return arguments, notes


def linear(start: float):
    """SB3 schedules take the remaining progress (1 -> 0)."""
    return lambda remaining: start * remaining


def ppo_arguments(c: PPOConfig, num_envs: int) -> tuple[dict, list[str]]:
    """SB3 PPO keyword arguments for a lab PPOConfig, and the mappings that are not 1:1."""
    if c.shared_trunk:
        raise UserError(
            "SB3's PPO MLP policies have no shared trunk: drop --shared-trunk or use --impl lab"
        )
    notes = [
        f"vf_coef: {c.vf_coef} -> {c.vf_coef / 2} (SB3's value loss has no 0.5 factor)",
        "initialisation: SB3's (orthogonal) rather than the lab's",
    ]
    if c.max_grad_norm == 0:
        notes.append("max_grad_norm: 0 (off) -> inf (SB3 always clips)")
    if c.normalize_obs or c.normalize_reward:
        notes.append(
            "normalize_obs/normalize_reward: SB3's VecNormalize "
            f"(clip_obs {CLIP_OBS}, clip_reward {CLIP_REWARD}, gamma {c.gamma})"
        )
    arguments = dict(
        learning_rate=linear(c.lr) if c.anneal_lr else c.lr,
        n_steps=c.n_steps,
        batch_size=c.batch_size,
        n_epochs=c.n_epochs,
        gamma=c.gamma,
        gae_lambda=c.gae_lambda,
        clip_range=linear(c.clip_range) if c.anneal_clip else c.clip_range,
        clip_range_vf=c.clip_range_vf or None,
        normalize_advantage=c.normalize_advantage,
        ent_coef=c.ent_coef,
        vf_coef=c.vf_coef / 2,
        max_grad_norm=no_clip(c.max_grad_norm),
        target_kl=c.target_kl or None,
        use_sde=c.use_sde,
        sde_sample_freq=c.sde_sample_freq,
        policy_kwargs=dict(
            net_arch=dict(pi=list(c.hidden), vf=list(c.hidden)),
            activation_fn=ACTIVATIONS[c.activation],
            log_std_init=c.log_std_init,
            optimizer_kwargs=dict(eps=c.adam_eps),
        ),
    )
    return arguments, notes


def printable(arguments: dict) -> dict:
    """The arguments as config.json can hold them (classes and schedules by name)."""

    def show(value):
        if isinstance(value, dict):
            return {key: show(item) for key, item in value.items()}
        if isinstance(value, type):
            return value.__name__
        if callable(value):
            return "linear schedule to 0"
        if isinstance(value, float) and math.isinf(value):
            return "inf"
        return value

    return show(arguments)


class SB3Agent:
    """An SB3 model as the lab's checkpointer sees it: state_dict / load_state_dict."""

    def __init__(self, model, normalizer: VecNormalize | None):
        self.model, self.normalizer = model, normalizer

    @property
    def gradient_steps(self) -> int:
        if isinstance(self.model, DQN):
            return self.model._n_updates  # one per gradient step
        rollout = self.model.n_steps * self.model.n_envs  # PPO counts epochs
        return self.model._n_updates * math.ceil(rollout / self.model.batch_size)

    @property
    def updates(self) -> int:
        """Calls of SB3's train(), as the lab counts updates."""
        per_call = self.model.gradient_steps if isinstance(self.model, DQN) else self.model.n_epochs
        return self.model._n_updates // per_call

    def state_dict(self) -> dict:
        m = self.model
        state = {
            "policy": m.policy.state_dict(),
            "optimizer": m.policy.optimizer.state_dict(),
            "counters": {
                "num_timesteps": m.num_timesteps,
                "n_updates": m._n_updates,
                "episode_num": m._episode_num,
            },
        }
        if isinstance(m, DQN):
            b = m.replay_buffer
            state["replay"] = {
                "observations": b.observations,
                "next_observations": b.next_observations,
                "actions": b.actions,
                "rewards": b.rewards,
                "dones": b.dones,
                "timeouts": b.timeouts,
                "pos": b.pos,
                "full": b.full,
            }
        if self.normalizer is not None:
            # VecNormalize keeps observation statistics only when it normalises observations
            n = self.normalizer
            state["normalizer"] = {"ret": [n.ret_rms.mean, n.ret_rms.var, n.ret_rms.count]}
            if n.norm_obs:
                state["normalizer"]["obs"] = [n.obs_rms.mean, n.obs_rms.var, n.obs_rms.count]
        return state

    def load_state_dict(self, state: dict) -> None:
        m = self.model
        m.policy.load_state_dict(state["policy"])
        m.policy.optimizer.load_state_dict(state["optimizer"])
        counters = state["counters"]
        m.num_timesteps = int(counters["num_timesteps"])
        m._n_updates = int(counters["n_updates"])
        m._episode_num = int(counters["episode_num"])
        if isinstance(m, DQN):
            b = m.replay_buffer
            for name, value in state["replay"].items():
                setattr(b, name, value)
            b.pos, b.full = int(b.pos), bool(b.full)
            m._n_calls = m.num_timesteps // m.n_envs  # SB3's target-sync clock
        if self.normalizer is not None:
            n, saved = self.normalizer, state["normalizer"]
            n.ret_rms.mean, n.ret_rms.var, n.ret_rms.count = saved["ret"]
            if n.norm_obs:
                n.obs_rms.mean, n.obs_rms.var, n.obs_rms.count = saved["obs"]


class LabCallbacks(BaseCallback):
    """Feeds SB3's training to the lab's callbacks: episode ends, metric lines, evaluations,
    checkpoints, stop requests (solved, Ctrl-C). Learning time is the time between the end
    of one SB3 rollout and the start of the next (SB3's train() runs there)."""

    def __init__(self, run: RunContext, callbacks: list[Callback], log_every: int, ctrl_c):
        super().__init__()
        self.run, self.callbacks, self.log_every, self.ctrl_c = run, callbacks, log_every, ctrl_c
        self.next_log = (run.env_steps // log_every + 1) * log_every
        self.window = (time.perf_counter(), run.env_steps, run.updates)
        self.learn_started: float | None = None
        self.session = (time.perf_counter(), dict(run.timers))

    def _on_rollout_start(self) -> None:
        if self.learn_started is not None:
            self.run.timers["learn"] += time.perf_counter() - self.learn_started
            self.learn_started = None

    def _on_rollout_end(self) -> None:
        self.learn_started = time.perf_counter()

    def account_acting(self) -> None:
        """Acting time = this session's wall time less learning, evaluation and the rest."""
        started, before = self.session
        timers = self.run.timers
        spent = sum(timers[k] - before[k] for k in ("learn", "eval", "other"))
        timers["act"] = before["act"] + time.perf_counter() - started - spent

    def _on_step(self) -> bool:
        run, agent = self.run, self.run.agent
        run.env_steps, run.updates = self.model.num_timesteps, agent.updates
        for info in self.locals["infos"]:  # SB3's documented way to see its Monitor's info
            episode = info.get("episode")
            if episode is not None:
                run.episodes += 1
                for callback in self.callbacks:
                    callback.on_episode_end(run, float(episode["r"]), int(episode["l"]))
        if run.env_steps >= self.next_log:
            self.log()
        for callback in self.callbacks:
            callback.on_step(run)
        stop = any(callback.should_stop(run) for callback in self.callbacks)
        return not (stop or self.ctrl_c.pressed)

    def log(self) -> None:
        run = self.run
        now = time.perf_counter()
        started, steps, updates = self.window
        seconds = max(now - started, 1e-9)
        run.latest["time/sps"] = (run.env_steps - steps) / seconds
        run.latest["time/ups"] = (run.updates - updates) / seconds
        self.window = (now, run.env_steps, run.updates)
        self.next_log = (run.env_steps // self.log_every + 1) * self.log_every
        logged = self.model.logger.name_to_value
        for key, value in logged.items():
            if key in METRIC_NAMES:
                run.latest[METRIC_NAMES[key]] = float(value)
        if "train/loss" in logged:  # DQN: the TD loss; PPO: the sum of its losses
            name = "losses/td_loss" if isinstance(self.model, DQN) else "losses/total_loss"
            run.latest[name] = float(logged["train/loss"])
        if "train/entropy_loss" in logged:  # SB3 logs minus the entropy
            run.latest["losses/entropy"] = -float(logged["train/entropy_loss"])
        self.account_acting()
        for callback in self.callbacks:
            callback.on_log(run, dict(run.latest))


class SB3Experiment(Experiment):
    """runner.Experiment with SB3 building and training the agent; the rest is the lab's."""

    impl = "sb3"

    def __init__(self, spec, task, module, run_config, algo_config, run_dir: Path):
        self.spec, self.task, self.module = spec, task, module
        self.run_config, self.algo_config, self.run_dir = run_config, algo_config, Path(run_dir)
        torch.set_num_threads(1)
        c = run_config
        if isinstance(algo_config, DQNConfig):
            algo_class = DQN
            self.arguments, self.notes = dqn_arguments(algo_config, c.num_envs)
        else:
            algo_class = PPO
            self.arguments, self.notes = ppo_arguments(algo_config, c.num_envs)
        env = DummyVecEnv([lambda: Monitor(make_env(task)) for _ in range(c.num_envs)])
        if algo_class is DQN and not isinstance(env.action_space, gym.spaces.Discrete):
            raise UserError(
                f"dqn needs a discrete action space, this task has {env.action_space}; "
                "use ppo for continuous actions"
            )
        normalizer = None
        if algo_class is PPO and (algo_config.normalize_obs or algo_config.normalize_reward):
            env = normalizer = VecNormalize(
                env,
                norm_obs=algo_config.normalize_obs,
                norm_reward=algo_config.normalize_reward,
                clip_obs=CLIP_OBS,
                clip_reward=CLIP_REWARD,
                gamma=algo_config.gamma,
            )
        model = algo_class("MlpPolicy", env, seed=c.seed, device="cpu", **self.arguments)
        model.set_logger(Logger(folder=None, output_formats=[]))  # our logger writes the files
        self.agent = SB3Agent(model, normalizer)
        self.run = RunContext(
            self.agent,
            c.total_steps,
            c.num_envs,
            c.seed,
            self.run_dir,
            title=f"{spec.name} (sb3) · {task.name} · seed {c.seed}",
            solved_at=task.solved_at,
        )

    @classmethod
    def create(cls, spec, task, module, algo_config_cls, run_flags, algo_flags, run_dir):
        experiment = super().create(
            spec, task, module, algo_config_cls, run_flags, algo_flags, run_dir
        )
        path = experiment.run_dir / "config.json"
        config = json.loads(path.read_text())
        config["sb3"] = {"arguments": printable(experiment.arguments), "mapping": experiment.notes}
        checkpoint.atomic_write_text(path, json.dumps(config, indent=2) + "\n")
        return experiment

    def greedy_policy(self, obs: np.ndarray) -> np.ndarray:
        if self.agent.normalizer is not None:  # the statistics training ended with, frozen
            obs = self.agent.normalizer.normalize_obs(obs)
        return self.agent.model.predict(obs, deterministic=True)[0]

    def fit(self, callbacks: list[Callback]) -> None:
        """SB3's learn() with the lab's callbacks; same contract as loop.train."""
        run, model = self.run, self.agent.model
        if run.env_steps:  # resumed: fresh episodes, not a replay of the first ones
            model.set_random_seed(run.seed + run.env_steps)
        for callback in callbacks:
            callback.on_train_start(run)
        ctrl_c = CtrlC()
        bridge = LabCallbacks(run, callbacks, self.run_config.log_interval, ctrl_c)
        try:
            model.learn(
                total_timesteps=max(run.total_steps - run.env_steps, 0),
                callback=bridge,
                log_interval=None,
                reset_num_timesteps=run.env_steps == 0,
            )
        except KeyboardInterrupt:
            ctrl_c.pressed = True
        finally:
            ctrl_c.restore()
            model.get_env().close()
        bridge._on_rollout_start()  # close an open learning interval
        run.env_steps, run.updates = model.num_timesteps, self.agent.updates
        bridge.account_acting()
        if ctrl_c.pressed:
            run.interrupted, run.stop_reason = True, "interrupted"
        if run.stop_reason is None:
            run.stop_reason = "budget" if run.env_steps >= run.total_steps else "stopped"
        for callback in callbacks:
            callback.on_train_end(run)
