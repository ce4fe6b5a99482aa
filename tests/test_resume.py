"""Checkpoints and resume: round trips of every piece of in-flight state, and through the real
CLI, runs killed (SIGKILL) or interrupted (Ctrl-C) and resumed end exactly where the same run
never interrupted ends: same eval.json returns, bitwise the same parameters."""

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from envs.resumable import ResumableVectorEnv
from rl_lab import checkpoint
from rl_lab.buffers import ReplayBuffer, RolloutBuffer, Transition
from rl_lab.logging import read_metrics
from tests.cli_helpers import ROOT, cli


def test_checkpoint_round_trip_keeps_types(tmp_path):
    state = {
        "run": {"env_steps": 7},
        "t": torch.arange(3.0),
        "a": np.array([1, 2], np.int64),
        "empty": np.zeros((0, 4), np.float32),
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1}]},
        "rng": np.random.default_rng(0).bit_generator.state,
        "shape": (2, 3),
        "none": None,
    }
    checkpoint.save(tmp_path, state)
    loaded = checkpoint.load(tmp_path)
    assert torch.equal(loaded["t"], state["t"]) and np.array_equal(loaded["a"], state["a"])
    assert loaded["empty"].shape == (0, 4)
    assert list(loaded["optimizer"]["state"]) == [0]
    assert loaded["rng"] == state["rng"] and loaded["shape"] == (2, 3) and loaded["none"] is None


# ------------------------------------------------------------------ in-flight state, in process


def random_steps(rng, count, num_envs=2, obs_dim=3):
    """Scripted vectorized steps with episode ends (both kinds) sprinkled in."""
    for _ in range(count):
        yield Transition(
            rng.normal(size=(num_envs, obs_dim)).astype(np.float32),
            rng.integers(0, 2, size=num_envs),
            rng.normal(size=num_envs).astype(np.float32),
            rng.normal(size=(num_envs, obs_dim)).astype(np.float32),
            rng.random(num_envs) < 0.1,
            rng.random(num_envs) < 0.05,
        )


def test_replay_buffer_keeps_its_n_step_windows_in_flight(tmp_path):
    steps = list(random_steps(np.random.default_rng(0), 40))
    make = lambda: ReplayBuffer(100, (3,), num_envs=2, seed=1, n_step=5, gamma=0.9)  # noqa: E731
    straight, first = make(), make()
    for batch in steps[:17]:
        straight.add(batch)
        first.add(batch)
    assert any(first._windows), "the windows should hold steps not yet stored"
    checkpoint.save(tmp_path, {"run": {"env_steps": 17}, "buffer": first.state_dict()})
    resumed = make()
    resumed.load_state_dict(checkpoint.load(tmp_path)["buffer"])
    for batch in steps[17:]:
        straight.add(batch)
        resumed.add(batch)
    for name in ("obs", "next_obs", "action", "reward", "terminated", "discount"):
        assert np.array_equal(getattr(straight, name), getattr(resumed, name)), name
    assert straight.size == resumed.size
    assert np.array_equal(straight.sample(8).indices, resumed.sample(8).indices)


def test_rollout_buffer_keeps_a_partial_rollout(tmp_path):
    rng = np.random.default_rng(0)
    make = lambda: RolloutBuffer(8, 2, (3,), (), np.int64, seed=3)  # noqa: E731
    straight, first = make(), make()
    rows = [
        (
            rng.normal(size=(2, 3)),
            rng.integers(0, 2, 2),
            rng.normal(size=2),
            rng.normal(size=2),
            rng.normal(size=2),
            rng.random(2) < 0.2,
            rng.random(2) < 0.1,
            rng.normal(size=2),
        )
        for _ in range(8)
    ]
    for row in rows[:5]:
        straight.add(*row)
        first.add(*row)
    checkpoint.save(tmp_path, {"run": {"env_steps": 10}, "buffer": first.state_dict()})
    resumed = make()
    resumed.load_state_dict(checkpoint.load(tmp_path)["buffer"])
    assert resumed.pos == 5
    for row in rows[5:]:
        straight.add(*row)
        resumed.add(*row)
    for buffer in (straight, resumed):
        buffer.compute_advantages(np.ones(2), 0.99, 0.95)
    assert torch.equal(straight.advantages, resumed.advantages)
    order = [b["obs"] for b in straight.minibatches(4)], [b["obs"] for b in resumed.minibatches(4)]
    assert all(torch.equal(a, b) for a, b in zip(*order))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_vector_env_replays_its_episodes_in_flight(env_id, tmp_path):
    """Saved mid-episode, restored in fresh envs: the same observations, rewards and
    episode ends follow (through later resets, which draw from the restored rng)."""
    make = lambda: ResumableVectorEnv([lambda: gym.make(env_id)] * 3)  # noqa: E731
    straight = make()
    straight.reset(seed=5)
    space = straight.action_space
    space.seed(0)
    actions = [space.sample() for _ in range(400)]
    for action in actions[:123]:
        straight.step(action)
    checkpoint.save(tmp_path, {"run": {"env_steps": 123}, "env": straight.state_dict()})
    resumed = make()
    obs = resumed.load_state_dict(checkpoint.load(tmp_path)["env"])
    assert np.array_equal(obs, straight.state_dict()["obs"])
    ends = 0
    for action in actions[123:]:
        a, b = straight.step(action), resumed.step(action)
        for x, y in zip(a[:4], b[:4]):
            assert np.array_equal(x, y)
        ends += int(a[2].sum() + a[3].sum())
    assert ends > 0, "the comparison should run through episode ends and resets"


# ------------------------------------------------------------------ through the real CLI

# Short runs whose checkpoints fall mid-episode, mid n-step window, mid-rollout (700 and 600
# are not multiples of DQN's train_freq 256 nor PPO's 8 envs x 32 steps rollout).
RUNS = {
    "dqn": [
        "dqn",
        "cartpole",
        "--gradient-steps",
        "32",
        "--total-steps",
        "2000",
        "--checkpoint-interval",
        "700",
    ],
    "ppo": ["ppo", "cartpole", "--total-steps", "2000", "--checkpoint-interval", "600"],
}
QUIET = ["--no-dashboard", "--eval-interval", "1000", "--eval-episodes", "10"]


def start(args, run_dir):
    return subprocess.Popen(
        [sys.executable, "-m", "rl_lab.run", *args, *QUIET, "--run-dir", str(run_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def saved_step(run_dir) -> int | None:
    return checkpoint.latest_step(run_dir / "checkpoints")


def wait_for(condition, timeout: float = 120, what: str = "a checkpoint"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} did not appear")


def final_state(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint.newest(run_dir / "checkpoints") / "tensors.safetensors"))


def assert_same_run(done, resumed):
    """Same final evaluation returns, same step count, every saved tensor bitwise equal, and
    the same training episodes logged in the same order."""
    a, b = (json.loads((d / "eval.json").read_text()) for d in (done, resumed))
    assert b["returns"] == a["returns"] and b["env_steps"] == a["env_steps"]
    tensors_a, tensors_b = final_state(done), final_state(resumed)
    assert tensors_a.keys() == tensors_b.keys()
    different = [k for k in tensors_a if not torch.equal(tensors_a[k], tensors_b[k])]
    assert not different, different[:5]

    def episodes(d):
        rows = read_metrics(d / "metrics.jsonl")
        return [
            (r["step"], r["charts/episodic_return"]) for r in rows if "charts/episodic_return" in r
        ]

    assert episodes(done) == episodes(resumed)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Each run of RUNS once, never interrupted (the reference for the resumed ones)."""
    runs = {}
    for name, args in RUNS.items():
        run_dir = tmp_path_factory.mktemp("uninterrupted") / name
        result = cli(*args, *QUIET, "--run-dir", run_dir)
        assert result.returncode == 0, result.stderr
        runs[name] = run_dir
    return runs


@pytest.mark.parametrize("algo", RUNS)
def test_sigkill_then_resume_ends_exactly_like_the_uninterrupted_run(algo, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = start(RUNS[algo], run_dir)
    wait_for(lambda: saved_step(run_dir) is not None)
    process.kill()  # SIGKILL at a checkpoint boundary or just after: no chance to save
    process.wait()
    assert not (run_dir / "eval.json").exists(), "the kill came too late to test anything"
    result = cli("--resume", run_dir, "--no-dashboard")
    assert result.returncode == 0, result.stderr
    assert f"resuming {run_dir} from step" in result.stdout
    assert_same_run(uninterrupted[algo], run_dir)


@pytest.mark.parametrize("algo", RUNS)
def test_ctrl_c_at_an_arbitrary_step_saves_there_and_resumes_exactly(algo, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = start(RUNS[algo], run_dir)
    wait_for(lambda: saved_step(run_dir) is not None)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    stopped = int(out.split("interrupted at ")[1].split(" steps")[0].replace(",", ""))
    assert saved_step(run_dir) == stopped  # a checkpoint at the interrupt itself
    result = cli("--resume", run_dir, "--no-dashboard")
    assert result.returncode == 0, result.stderr
    assert_same_run(uninterrupted[algo], run_dir)


def test_run_killed_before_its_first_checkpoint_resumes_from_step_zero(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    args = [*RUNS["dqn"][:-1], "100000"]  # no periodic checkpoint before the kill
    process = start(args, run_dir)
    wait_for(lambda: (run_dir / "metrics.jsonl").exists(), what="metrics.jsonl")
    process.kill()
    process.wait()
    assert saved_step(run_dir) is None
    result = cli("--resume", run_dir, "--no-dashboard")
    assert result.returncode == 0, result.stderr
    assert "no checkpoint yet: training it from step 0" in result.stdout
    assert_same_run(uninterrupted["dqn"], run_dir)


def test_second_process_on_a_live_run_is_refused_until_the_first_dies(tmp_path):
    run_dir = tmp_path / "run"
    live = ["--total-steps", "200000", "--no-stop-when-solved", "--checkpoint-interval", "500"]
    process = start(["dqn", "cartpole", *live], run_dir)
    try:
        wait_for(lambda: saved_step(run_dir) is not None)
        result = cli("--resume", run_dir, "--no-dashboard")
        assert process.poll() is None, "the first run should still be training"
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and f"process {process.pid}" in result.stderr
    finally:
        process.kill()  # the kernel drops the lock with the process
        process.wait()
    lines = (run_dir / "metrics.jsonl").read_text().count("\n")
    assert lines > 0
    done = saved_step(run_dir)
    result = cli("--resume", run_dir, "--no-dashboard", "--total-steps", done + 300)
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "eval.json").read_text())["env_steps"] > done
