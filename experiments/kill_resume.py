"""Kill runs at random moments, resume each, and check it ends as if never interrupted.

    python experiments/kill_resume.py [--trials 11] [--seed 0]

For DQN and PPO on CartPole, one uninterrupted run is the reference. Then each trial starts
the same run through the real CLI and SIGKILLs it at one of three kinds of moment: a random
env step, during a checkpoint write (the moment a `.tmp_*` directory appears in checkpoints/),
or during the final evaluation (after the last checkpoint, before eval.json). It resumes with
`--resume` and compares the final evaluation's returns and every tensor of the final
checkpoint with the reference. "Steps lost" is how far the killed run had got (the last
metrics.jsonl row) minus the step its resume started from. The table is printed and saved
as experiments/results/kill_resume.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
WORK = RESULTS / "tmp" / "kill_resume"
INTERVAL = 500
RUNS = {
    "dqn": ["dqn", "cartpole", "--total-steps", "4000", "--gradient-steps", "64"],
    "ppo": ["ppo", "cartpole", "--total-steps", "4000"],
}
COMMON = ["--checkpoint-interval", str(INTERVAL), "--eval-interval", "1000", "--no-dashboard"]
KINDS = ("random", "checkpoint write", "final evaluation")


def command(args: list[str], run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "rl_lab.run", *args, *COMMON, "--run-dir", str(run_dir)]


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def run(argv: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=environment())
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result


def latest(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / "latest"
    return run_dir / "checkpoints" / pointer.read_text().strip() if pointer.is_file() else None


def outcome(run_dir: Path) -> tuple[list[float], dict[str, torch.Tensor]]:
    report = json.loads((run_dir / "eval.json").read_text())
    return report["returns"], load_file(str(latest(run_dir) / "tensors.safetensors"))


def last_logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    steps = [0]
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue  # a torn last line
    return max(steps)


def kill_at(process: subprocess.Popen, run_dir: Path, kind: str, step: int, final: int):
    """Wait for the moment of this kind, then SIGKILL; return what the kill interrupted.

    Moments are set in env steps (the last metrics.jsonl row), not seconds, so they do not
    depend on how busy the machine is: "random" kills once the run has logged `step`,
    "checkpoint write" at the first checkpoint write after that.
    """
    checkpoints = run_dir / "checkpoints"
    while process.poll() is None:
        reached = last_logged_step(run_dir) >= step
        if kind == "random" and reached:
            break
        if kind == "checkpoint write" and reached and checkpoints.is_dir():
            if any(name.startswith(".tmp_") for name in os.listdir(checkpoints)):
                break
        if kind == "final evaluation" and latest(run_dir) is not None:
            if int(latest(run_dir).name[5:]) == final and not (run_dir / "eval.json").exists():
                break
        time.sleep(0.0005 if kind == "checkpoint write" else 0.005)
    if process.poll() is not None:
        return "finished before the kill"
    process.send_signal(signal.SIGKILL)
    process.wait()
    if any(p.name.startswith(".tmp_") for p in checkpoints.glob(".tmp_*")):
        return "a checkpoint write"
    if latest(run_dir) is not None and int(latest(run_dir).name[5:]) == final:
        return "the final evaluation"
    return "training"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=11, help="kills per algorithm")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(WORK, ignore_errors=True)
    rows = []
    header = (
        f"{'algo':<4} {'kill aimed at':<17} {'landed in':<21} {'aim':>5} {'reached':>7} "
        f"{'resumed':>7} {'lost':>5} {'same returns':>12} {'same params':>11}"
    )
    print(header)
    for algo, algo_args in RUNS.items():
        reference_dir = WORK / f"{algo}-reference"
        run(command(algo_args, reference_dir))
        final = int(latest(reference_dir).name[5:])
        reference_returns, reference_tensors = outcome(reference_dir)
        for trial in range(args.trials):
            kind = KINDS[trial % len(KINDS)]
            run_dir = WORK / f"{algo}-{trial:02d}"
            # An env step of the run; a checkpoint write is looked for from a step that leaves
            # at least one periodic save to catch.
            at = rng.randrange(0, final - INTERVAL if kind == "checkpoint write" else final)
            process = subprocess.Popen(
                command(algo_args, run_dir),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=environment(),
            )
            landed = kill_at(process, run_dir, kind, at, final)
            reached = last_logged_step(run_dir)
            if (run_dir / "config.json").exists():
                resumed = run([sys.executable, "-m", "rl_lab.run", "--resume", str(run_dir)])
            else:  # killed in start-up, before the run existed: nothing to resume, start it
                landed = "start-up (no run yet)"
                resumed = run(command(algo_args, run_dir))
            first = resumed.stdout.splitlines()[0] if resumed.stdout else ""
            start = int(first.rsplit(" ", 1)[-1].replace(",", "")) if "resuming" in first else 0
            returns, tensors = outcome(run_dir)
            same_params = tensors.keys() == reference_tensors.keys() and all(
                torch.equal(tensors[k], reference_tensors[k]) for k in tensors
            )
            row = {
                "algo": algo,
                "aimed_at": kind,
                "landed_in": landed,
                "aimed_step": at,
                "reached_step": reached,
                "resumed_from": start,
                "steps_lost": max(reached - start, 0),
                "same_returns": returns == reference_returns,
                "same_params": same_params,
            }
            rows.append(row)
            print(
                f"{algo:<4} {kind:<17} {landed:<21} {at:>5} {reached:>7} "
                f"{start:>7} {row['steps_lost']:>5} {str(row['same_returns']):>12} "
                f"{str(same_params):>11}"
            )
    killed = [r for r in rows if r["landed_in"] != "finished before the kill"]
    equal = sum(r["same_returns"] and r["same_params"] for r in killed)
    most_lost = max((r["steps_lost"] for r in killed), default=0)
    landed = {
        k: sum(r["landed_in"] == k for r in killed)
        for k in sorted({r["landed_in"] for r in killed})
    }
    summary = (
        f"{len(killed)} kills ({', '.join(f'{n} in {k}' for k, n in landed.items())}): "
        f"{equal} ended equal to the uninterrupted run (returns and every tensor); "
        f"steps lost per kill: at most {most_lost} (checkpoint interval {INTERVAL}), "
        f"mean {sum(r['steps_lost'] for r in killed) / max(len(killed), 1):.0f}"
    )
    print(summary)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "kill_resume.json").write_text(
        json.dumps({"runs": RUNS, "common": COMMON, "rows": rows, "summary": summary}, indent=2)
        + "\n"
    )
    lines = [
        "| algo | kill aimed at | landed in | reached | resumed from | lost | same returns | same params |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    lines += [
        f"| {r['algo']} | {r['aimed_at']} | {r['landed_in']} | {r['reached_step']} | "
        f"{r['resumed_from']} | {r['steps_lost']} | {r['same_returns']} | {r['same_params']} |"
        for r in rows
    ]
    (RESULTS / "kill_resume.md").write_text("\n".join([*lines, "", summary, ""]))
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
