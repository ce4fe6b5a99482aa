"""Run one ALGO TASK (plus flags) for several seeds and print a table of outcomes.

    python experiments/seeds.py dqn cartpole --seeds 0 1 2 3 4 [-- --lr 1e-3 ...]

Each run goes through the real CLI (`rl_lab.run.main`), quietly, into
experiments/results/tmp/; the table (final eval, steps and seconds to the first solving
evaluation) is printed and saved as JSON under experiments/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from rl_lab.run import main as rl_lab_main

RESULTS = Path(__file__).parent / "results"


def run_seed(algo: str, task: str, seed: int, flags: list[str]) -> dict:
    run_dir = RESULTS / "tmp" / f"{algo}-{task}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        status = rl_lab_main(
            [algo, task, "--seed", str(seed), "--no-dashboard", "--run-dir", str(run_dir), *flags]
        )
    if status != 0:
        raise SystemExit(f"run failed with status {status}: {algo} {task} seed {seed}")
    report = json.loads((run_dir / "eval.json").read_text())
    report["total_seconds"] = time.perf_counter() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algo")
    parser.add_argument("task")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--name", default=None, help="name of the results file")
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    rows = []
    print(
        f"{'seed':>4} {'final eval':>11} {'solved':>6} {'1st solve step':>14} "
        f"{'1st solve s':>11} {'steps':>8} {'wall s':>7}"
    )
    for seed in args.seeds:
        r = run_seed(args.algo, args.task, seed, flags)
        rows.append(
            {
                "seed": seed,
                **{
                    k: r[k]
                    for k in (
                        "mean_return",
                        "solved",
                        "first_solved_step",
                        "first_solved_seconds",
                        "env_steps",
                        "wall_seconds",
                        "total_seconds",
                        "stop_reason",
                    )
                },
            }
        )
        fs = r["first_solved_seconds"]
        print(
            f"{seed:>4} {r['mean_return']:>11.1f} {str(r['solved']):>6} "
            f"{str(r['first_solved_step']):>14} {'-' if fs is None else f'{fs:.1f}':>11} "
            f"{r['env_steps']:>8} {r['wall_seconds']:>7.1f}",
            flush=True,
        )
    finals = [row["mean_return"] for row in rows]
    solved = sum(row["solved"] for row in rows)
    print(f"solved {solved}/{len(rows)}; median final eval {statistics.median(finals):.1f}")
    RESULTS.mkdir(exist_ok=True)
    name = args.name or f"seeds-{args.algo}-{args.task}"
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"algo": args.algo, "task": args.task, "flags": flags, "rows": rows}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
