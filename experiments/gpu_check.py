"""LM PPO on one GPU, in float32 and in bf16: tokens/s, completions/s and peak GPU memory.

A maintainer runs this on a GPU machine (assets prepared, see the README):

    python experiments/gpu_check.py                      # a few iterations of ppo sentiment
    python experiments/gpu_check.py --iterations 8 -- --lora-r 16   # extra flags for the run

Each precision is one `python -m rl_lab.run ppo sentiment` subprocess, its precision set the
way `accelerate launch --mixed_precision` sets it (ACCELERATE_MIXED_PRECISION); the numbers come
from its metrics.jsonl (the first iteration, which warms up, is left out). Prints a table and
saves experiments/results/gpu_check.{json,md}. Without a CUDA GPU it says so and exits 2;
`--cpu` runs the same on the CPU (a smoke test of this script, not a GPU measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def run_once(precision: str, iterations: int, extra: list[str], workdir: Path, cpu: bool) -> dict:
    run_dir = workdir / precision
    command = [sys.executable, "-m", "rl_lab.run", "ppo", "sentiment", "--total-steps"]
    command += [str(iterations), "--eval-episodes", "32", "--no-dashboard", "--run-dir"]
    command += [str(run_dir), *extra]
    env = {**os.environ, "ACCELERATE_MIXED_PRECISION": precision}
    if cpu:
        env["ACCELERATE_USE_CPU"] = "true"
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise SystemExit(f"the {precision} run failed: {' '.join(tail)}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    updates = [row for row in rows if "time/tokens_per_s" in row][1:] or rows[-1:]
    report = json.loads((run_dir / "eval.json").read_text())
    seconds = report["timers"]["act"] + report["timers"]["learn"]
    return {
        "precision": precision,
        "tokens_per_s": float(np.mean([row["time/tokens_per_s"] for row in updates])),
        "completions_per_s": report["completions"] / max(seconds, 1e-9),
        "seconds_per_iteration": seconds / max(report["iterations"], 1),
        "peak_memory_gib": max(row.get("charts/peak_memory_gib", float("nan")) for row in rows),
        "positive_fraction_after": report["after"]["positive_fraction"],
    }


def markdown(rows: list[dict], device: str, command: str) -> str:
    lines = [
        f"# LM PPO on {device}",
        "",
        f"`{command}`",
        "",
        "| precision | tokens/s | completions/s | s/iteration | peak memory (GiB) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['precision']} | {r['tokens_per_s']:.0f} | {r['completions_per_s']:.1f} | "
            f"{r['seconds_per_iteration']:.2f} | {r['peak_memory_gib']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=4, help="PPO iterations per run")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (smoke test)")
    parser.add_argument("--name", default="gpu_check", help="results file name")
    parser.add_argument("extra", nargs="*", help="flags for the run, after --")
    args = parser.parse_args()

    import torch

    if not args.cpu and not torch.cuda.is_available():
        print(
            "error: no CUDA GPU here: run this on a GPU machine (or with --cpu to smoke-test it)",
            file=sys.stderr,
        )
        return 2
    device = "CPU" if args.cpu else torch.cuda.get_device_name(0)
    precisions = ["no"]
    if args.cpu or torch.cuda.is_bf16_supported():
        precisions.append("bf16")
    with tempfile.TemporaryDirectory() as workdir:
        rows = [
            run_once(p, args.iterations, args.extra, Path(workdir), args.cpu) for p in precisions
        ]
    command = "python experiments/gpu_check.py " + " ".join(sys.argv[1:])
    text = markdown(rows, device, command)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"device": device, "command": command, "rows": rows}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
