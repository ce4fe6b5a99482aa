"""Two processes x one thread against one process x two threads, LM PPO on the sentiment preset.

    python experiments/benchmark_processes.py                      # 3 iterations each
    python experiments/benchmark_processes.py --iterations 4 -- --reward vader   # extra flags

Runs `python -m rl_lab.run ppo sentiment --threads 2` and `accelerate launch --config_file
experiments/accelerate/cpu.yaml --num_processes 2 -m rl_lab.run ppo sentiment --threads 1` one
after the other (same global batch: --num-envs prompts per iteration over all processes), and
reports completions/s and wall time per iteration from each run's eval.json (sampling and
updates; model loading and the held-out evaluations left out), with the load average. Results:
experiments/results/benchmark_processes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
CPU_CONFIG = ROOT / "experiments" / "accelerate" / "cpu.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(name: str, processes: int, threads: int, args, workdir: Path) -> dict:
    run_dir = workdir / f"p{processes}t{threads}"
    train = ["-m", "rl_lab.run", "ppo", "sentiment", "--total-steps", str(args.iterations)]
    train += ["--threads", str(threads), "--eval-episodes", str(args.eval_episodes)]
    train += ["--no-dashboard", "--run-dir", str(run_dir), *args.extra]
    if processes == 1:
        command = [sys.executable, *train]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
        command += [str(CPU_CONFIG), "--num_processes", str(processes)]
        command += ["--main_process_port", str(free_port()), *train]
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{(done.stdout + done.stderr)[-2000:]}")
    report = json.loads((run_dir / "eval.json").read_text())
    seconds = report["timers"]["act"] + report["timers"]["learn"]
    return {
        "setup": name,
        "command": " ".join(command).replace(str(ROOT) + "/", ""),
        "iterations": report["iterations"],
        "completions": report["completions"],
        "completions_per_s": report["completions"] / seconds,
        "seconds_per_iteration": seconds / report["iterations"],
        "wall_seconds": report["wall_seconds"],
        "load_average": [load_before, os.getloadavg()[0]],
        "run_directories": sorted(p.name for p in workdir.iterdir()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=16)
    parser.add_argument("--name", default="benchmark_processes")
    parser.add_argument("extra", nargs="*", help="flags for both runs, after --")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, processes, threads in (
            ("1 process x 2 threads", 1, 2),
            ("2 processes x 1 thread", 2, 1),
        ):
            workdir = Path(tmp) / str(processes)
            workdir.mkdir()
            rows.append(run(name, processes, threads, args, workdir))
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        "# LM PPO: processes vs threads on this machine",
        "",
        "| setup | completions/s | s per iteration | load average (start, end) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        load = ", ".join(f"{x:.1f}" for x in r["load_average"])
        lines.append(
            f"| {r['setup']} | {r['completions_per_s']:.2f} | {r['seconds_per_iteration']:.1f} "
            f"| {load} |"
        )
    lines += ["", *(f"- `{r['command']}`" for r in rows), ""]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
