"""rl_lab vs Stable-Baselines3 on CartPole-v1: DQN and PPO, several seeds, one run, one machine.

    python experiments/benchmark_cartpole.py                 # dqn and ppo, seeds 0-4
    python experiments/benchmark_cartpole.py --algos dqn --seeds 0 1

Both libraries are measured with the same protocol, interleaved seed by seed so that machine
noise hits both alike:
- a greedy evaluation of 20 episodes every EVAL_INTERVAL env steps, with rl_lab's harness
  and fresh seeds each time (as rl_lab's runner does); its time is excluded from "time to
  first solve";
- "first solve" = the first evaluation with a mean return >= 475;
- "final" = a fresh 20-episode greedy evaluation of the policy the run ends with.
Rows: `ours` is the bare `python -m rl_lab.run ALGO cartpole` preset (which stops once an
evaluation solves); `ours-full` is the same preset made to train for its whole budget (does
the policy hold up?); `sb3` is SB3 with the rl-zoo3 CartPole-v1 hyperparameters and its full
budget. Steps/s and updates/s count training time only (evaluation excluded); updates are
gradient steps. Results: experiments/results/benchmark_cartpole.{json,md} (or --name).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import shutil
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rl_lab.evaluation import evaluate
from rl_lab.run import main as rl_lab_main
from rl_lab.runner import EVAL_SEED_OFFSET, FINAL_EVAL_SEED_OFFSET

RESULTS = Path(__file__).parent / "results"
EVAL_INTERVAL = 1_000
EVAL_EPISODES = 20
SOLVED = 475.0

# rl-zoo3 hyperparams/dqn.yml and ppo.yml, CartPole-v1.
SB3_DQN = dict(
    learning_rate=2.3e-3,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1_000,
    gamma=0.99,
    target_update_interval=10,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    policy_kwargs=dict(net_arch=[256, 256]),
)
SB3_DQN_STEPS = 50_000
SB3_PPO = dict(
    n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0
)  # learning rate lin_0.001 and clip range lin_0.2: set below
SB3_PPO_ENVS, SB3_PPO_STEPS = 8, 100_000


def eval_seeds(seed: int) -> tuple[int, int]:
    """The evaluation seeds rl_lab's runner uses (periodic base, final)."""
    return seed + EVAL_SEED_OFFSET, seed + FINAL_EVAL_SEED_OFFSET


def cartpole():
    return gym.make("CartPole-v1")


def run_ours(algo: str, seed: int, full_budget: bool) -> dict:
    run_dir = RESULTS / "tmp" / f"bench-{algo}-s{seed}-{'full' if full_budget else 'preset'}"
    shutil.rmtree(run_dir, ignore_errors=True)
    flags = [
        algo,
        "cartpole",
        "--seed",
        str(seed),
        "--no-dashboard",
        "--run-dir",
        str(run_dir),
        "--eval-interval",
        str(EVAL_INTERVAL),
        "--eval-episodes",
        str(EVAL_EPISODES),
    ]
    if full_budget:
        flags.append("--no-stop-when-solved")
    with contextlib.redirect_stdout(io.StringIO()):
        if rl_lab_main(flags) != 0:
            raise SystemExit(f"rl_lab run failed: {' '.join(flags)}")
    report = json.loads((run_dir / "eval.json").read_text())
    train_seconds = report["wall_seconds"] - report["timers"]["eval"]
    return {
        "first_solve_step": report["first_solved_step"],
        "first_solve_seconds": report["first_solved_seconds"],
        "final_eval": report["mean_return"],
        "env_steps": report["env_steps"],
        "train_seconds": train_seconds,
        "sps": report["env_steps"] / train_seconds,
        "ups": report["gradient_steps"] / train_seconds,
    }


def run_sb3(algo: str, seed: int) -> dict:
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    periodic_seed, final_seed = eval_seeds(seed)

    def greedy(model):
        return lambda obs: model.predict(obs, deterministic=True)[0]

    class Probe(BaseCallback):
        """Periodic greedy evaluation; its time is kept apart from training time."""

        def __init__(self):
            super().__init__()
            self.next_eval, self.eval_seconds = EVAL_INTERVAL, 0.0
            self.first_step = self.first_seconds = None

        def _on_training_start(self) -> None:
            self.started = time.perf_counter()

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_eval:
                self.next_eval += EVAL_INTERVAL
                tick = time.perf_counter()
                result = evaluate(
                    greedy(self.model), cartpole, EVAL_EPISODES, periodic_seed + self.num_timesteps
                )
                self.eval_seconds += time.perf_counter() - tick
                if self.first_step is None and result.mean_return >= SOLVED:
                    self.first_step = self.num_timesteps
                    self.first_seconds = time.perf_counter() - self.started - self.eval_seconds
            return True

    if algo == "dqn":
        model = DQN(
            "MlpPolicy",
            make_vec_env("CartPole-v1", 1, seed=seed),
            seed=seed,
            device="cpu",
            **SB3_DQN,
        )
        budget = SB3_DQN_STEPS
    else:
        model = PPO(
            "MlpPolicy",
            make_vec_env("CartPole-v1", SB3_PPO_ENVS, seed=seed),
            seed=seed,
            device="cpu",
            learning_rate=lambda left: 1e-3 * left,
            clip_range=lambda left: 0.2 * left,
            **SB3_PPO,
        )
        budget = SB3_PPO_STEPS
    probe = Probe()
    started = time.perf_counter()
    model.learn(budget, callback=probe)
    train_seconds = time.perf_counter() - started - probe.eval_seconds
    final = evaluate(greedy(model), cartpole, EVAL_EPISODES, final_seed)
    return {
        "first_solve_step": probe.first_step,
        "first_solve_seconds": probe.first_seconds,
        "final_eval": final.mean_return,
        "env_steps": model.num_timesteps,
        "train_seconds": train_seconds,
        "sps": model.num_timesteps / train_seconds,
        "ups": model._n_updates / train_seconds
        if algo == "dqn"
        else model._n_updates
        * -(-SB3_PPO_ENVS * SB3_PPO["n_steps"] // SB3_PPO["batch_size"])
        / train_seconds,
    }


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(rows: list[dict]) -> dict:
    solved_first = [r["first_solve_seconds"] for r in rows]
    # A seed that never solves counts as its whole training time (a lower bound on its time).
    censored = [
        r["first_solve_seconds"] if r["first_solve_seconds"] is not None else r["train_seconds"]
        for r in rows
    ]
    return {
        "seeds": len(rows),
        "solved_first": sum(s is not None for s in solved_first),
        "final_solved": sum(r["final_eval"] >= SOLVED for r in rows),
        "median_first_solve_seconds": statistics.median(censored),
        "median_first_solve_step": median_or_none([r["first_solve_step"] for r in rows]),
        "median_final_eval": statistics.median(r["final_eval"] for r in rows),
        "median_sps": statistics.median(r["sps"] for r in rows),
        "median_ups": statistics.median(r["ups"] for r in rows),
    }


def fmt(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(results: dict) -> str:
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"command: `python experiments/benchmark_cartpole.py`",
        "",
    ]
    for algo, variants in results["algos"].items():
        lines += [
            f"### {algo.upper()} on CartPole-v1",
            "",
            "| variant | seed | steps to 1st solve | s to 1st solve | final eval | env steps "
            "| train s | steps/s | updates/s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for variant, rows in variants.items():
            for r in rows:
                lines.append(
                    f"| {variant} | {r['seed']} | {fmt(r['first_solve_step'], 0)} | "
                    f"{fmt(r['first_solve_seconds'])} | {fmt(r['final_eval'])} | "
                    f"{r['env_steps']:,} | {fmt(r['train_seconds'])} | "
                    f"{fmt(r['sps'], 0)} | {fmt(r['ups'], 0)} |"
                )
        seeds = sorted({r["seed"] for rows in variants.values() for r in rows})
        subsets = {f"seeds {seeds[0]}-{seeds[-1]}": seeds}
        if len(seeds) > 5:  # the protocol is seeds 0-4: summarize those apart too
            subsets[f"seeds {seeds[0]}-{seeds[4]}"] = seeds[:5]
        for label, chosen in subsets.items():
            picked = {
                variant: [r for r in rows if r["seed"] in chosen]
                for variant, rows in variants.items()
            }
            lines += summary_table(label, picked)
    return "\n".join(lines)


def summary_table(label: str, variants: dict) -> list[str]:
    lines = [
        "",
        f"Summary over {label}:",
        "",
        "| variant | solved (first) | final policies solving | median s to 1st "
        "solve | median steps to 1st solve | median final eval | steps/s | updates/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, rows in variants.items():
        s = summarize(rows)
        lines.append(
            f"| {variant} | {s['solved_first']}/{s['seeds']} | "
            f"{s['final_solved']}/{s['seeds']} | "
            f"{fmt(s['median_first_solve_seconds'])} | "
            f"{fmt(s['median_first_solve_step'], 0)} | "
            f"{fmt(s['median_final_eval'])} | {fmt(s['median_sps'], 0)} | "
            f"{fmt(s['median_ups'], 0)} |"
        )
    ours, sb3 = summarize(variants["ours"]), summarize(variants["sb3"])
    ratio = sb3["median_first_solve_seconds"] / ours["median_first_solve_seconds"]
    return lines + [
        "",
        f"Median wall time to first solve, SB3 / ours ({label}): **{ratio:.1f}x**.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["dqn", "ppo"], choices=["dqn", "ppo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--skip-full", action="store_true", help="skip the ours-full rows")
    parser.add_argument("--name", default="benchmark_cartpole", help="results file name")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same for both libraries; a second thread gives nothing here
    results = {"eval_interval": EVAL_INTERVAL, "eval_episodes": EVAL_EPISODES, "algos": {}}
    for algo in args.algos:
        variants = {"ours": [], "ours-full": [], "sb3": []}
        if args.skip_full:
            del variants["ours-full"]
        for seed in args.seeds:
            for variant in variants:
                if variant == "sb3":
                    row = run_sb3(algo, seed)
                else:
                    row = run_ours(algo, seed, full_budget=variant == "ours-full")
                variants[variant].append({"seed": seed, **row})
                print(
                    f"{algo} {variant:>9} seed {seed}: first solve "
                    f"{fmt(row['first_solve_step'], 0)} steps / "
                    f"{fmt(row['first_solve_seconds'])} s, final {row['final_eval']:.1f}, "
                    f"{row['sps']:,.0f} steps/s, {row['ups']:,.0f} updates/s",
                    flush=True,
                )
        results["algos"][algo] = variants
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (RESULTS / f"{args.name}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
