"""The headline LM job, measured: `python -m rl_lab.run ppo sentiment` before vs after.

    python experiments/benchmark_sentiment.py                       # the bare preset
    python experiments/benchmark_sentiment.py -- --reward vader     # extra flags for the run
    python experiments/benchmark_sentiment.py --algo ppo grpo -- --reward vader  # side by side

Runs the command as a user does (a subprocess, so the wall time includes loading the models
and both held-out evaluations), then prints and saves the held-out metrics before and after,
the wall time, the targets of the issue (POSITIVE fraction >= 0.95 within 15 minutes,
perplexity within 1.2x of the start, distinct-2 > 0.9, KL bounded) and sample completions.
Results: experiments/results/benchmark_sentiment.{json,md}; the run itself under runs/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
METRICS = ("mean_reward", "positive_fraction", "kl", "perplexity", "distinct_1", "distinct_2")
BUDGET_MINUTES = 15.0


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "-"


def targets(before: dict, after: dict, minutes: float) -> dict[str, bool]:
    return {
        f"positive_fraction >= 0.95 within {BUDGET_MINUTES:g} min": after["positive_fraction"]
        >= 0.95
        and minutes <= BUDGET_MINUTES,
        "perplexity <= 1.2x start": after["perplexity"] <= 1.2 * before["perplexity"],
        "distinct_2 > 0.9": after["distinct_2"] > 0.9,
        "kl bounded (< 10 nats per completion)": abs(after["kl"]) < 10.0,
    }


def markdown(result: dict) -> str:
    before, after = result["eval"]["before"], result["eval"]["after"]
    lines = [
        f"# {result['command'].split()[3].upper()} sentiment benchmark",
        "",
        f"`{result['command']}`",
        "",
        f"- wall time of the whole command: **{result['wall_minutes']:.1f} min** "
        f"({result['eval']['iterations']} iterations); positive fraction gained per minute: "
        f"{(after['positive_fraction'] - before['positive_fraction']) / result['wall_minutes']:.3f}"
        f"; load average at the start "
        f"{result['load_average_start']}, at the end {result['load_average_end']}",
        f"- machine: {result['machine']}",
        "",
        "| metric | before | after |",
        "|---|---|---|",
    ]
    lines += [f"| {key} | {before[key]:.3f} | {after[key]:.3f} |" for key in METRICS]
    lines += ["", "| target | met |", "|---|---|"]
    lines += [f"| {name} | {'yes' if ok else 'no'} |" for name, ok in result["targets"].items()]
    lines += [
        "",
        "## Samples (held-out prompts)",
        "",
        "| prompt | before | after |",
        "|---|---|---|",
    ]
    cell = lambda text: " ".join(str(text).split()).replace("|", "\\|")  # noqa: E731
    samples = result["eval"]["samples"]
    for b, a in zip(samples["before"], samples["after"]):
        lines.append(
            f"| {cell(b['prompt'])} | {cell(b['completion'])} ({b['reward']:+.2f}) | "
            f"{cell(a['completion'])} ({a['reward']:+.2f}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--algo",
        nargs="+",
        default=["ppo"],
        choices=["ppo", "grpo", "rloo"],
        help="several: run side by side, at the same time, one torch thread each",
    )
    parser.add_argument("--name", default="benchmark_sentiment", help="results file name")
    parser.add_argument("extra", nargs="*", help="flags passed on to the runs (after --)")
    args = parser.parse_args()
    together = len(args.algo) > 1
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    runs = {}
    load_start = load_average()
    for algo in args.algo:
        run_dir = ROOT / "runs" / f"bench-{algo}-sentiment-{stamp}"
        flags = ["--no-dashboard", "--run-dir", str(run_dir), *args.extra]
        if together:  # two cores, two runs: one thread each, or they fight over both
            flags += ["--threads", "1"]
        shown = f"python -m rl_lab.run {algo} sentiment " + " ".join(flags)
        print(shown, flush=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "rl_lab.run", algo, "sentiment", *flags],
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        runs[algo] = (run_dir, shown, process, time.perf_counter())
    finished = {}
    while len(finished) < len(runs):  # note each run's own end, not the last one's
        for algo, (_, _, process, _) in runs.items():
            if algo not in finished and process.poll() is not None:
                finished[algo] = time.perf_counter()
        time.sleep(1)
    results = {}
    for algo, (run_dir, shown, process, started) in runs.items():
        status = process.returncode
        minutes = (finished[algo] - started) / 60
        if status != 0:
            print(f"the {algo} run failed with exit status {status}", file=sys.stderr)
            return status
        report = json.loads((run_dir / "eval.json").read_text())
        results[algo] = {
            "command": shown,
            "run_dir": str(run_dir.relative_to(ROOT)),
            "wall_minutes": minutes,
            "load_average_start": load_start,
            "load_average_end": load_average(),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "side_by_side_with": [other for other in args.algo if other != algo],
            "eval": report,
            "targets": targets(report["before"], report["after"], minutes),
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    for algo, result in results.items():
        name = f"{args.name}_{algo}" if together else args.name
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        text = markdown(result)
        (RESULTS / f"{name}.md").write_text(text)
        print(text)
    if together:
        print("positive fraction gained per minute (same machine, same time, one thread each):")
        for algo, result in results.items():
            before, after = result["eval"]["before"], result["eval"]["after"]
            gain = after["positive_fraction"] - before["positive_fraction"]
            print(
                f"  {algo}: {gain / result['wall_minutes']:.4f} ({gain:+.3f} in "
                f"{result['wall_minutes']:.1f} min)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
