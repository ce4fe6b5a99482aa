"""`python -m rl_lab.run compare ALGO[:IMPL],... TASK --seeds 100-109`: implementations side
by side, every (implementation, seed) a normal run, then rliable-style statistics.

Runs go to OUT/ALGO-IMPL/sSEED (each a full run directory) in worker processes, one torch
thread each, in interleaved order (seed 100 of every implementation, then seed 101, ...) so
that machine load hits every implementation alike. A rerun of the same command keeps the
runs that finished and resumes those that were interrupted. The report (report.md,
report.json, curves.png) is recomputed from the run directories alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from rl_lab import stats
from rl_lab.checkpoint import atomic_write_text
from rl_lab.errors import UserError


@dataclass(frozen=True)
class Entry:
    algo: str
    impl: str
    preset_file: str | None = None  # ALGO[:IMPL]@FILE: a preset from a file (tune's best)
    preset_name: str = ""  # how labels name the file: its folder, or folder/stem if ambiguous

    @property
    def label(self) -> str:
        tail = f"@{self.preset_name}" if self.preset_file else ""
        return f"{self.algo}:{self.impl}{tail}"

    @property
    def directory(self) -> str:
        tail = f"-{self.preset_name.replace('/', '-')}" if self.preset_file else ""
        return f"{self.algo}-{self.impl}{tail}"

    def flags(self) -> list[str]:
        return ["--preset-file", self.preset_file] if self.preset_file else []


# What the report aggregates per run: (key, what it means, higher is better).
GYM_METRICS = [
    ("final_return", "final greedy evaluation (mean return)", True),
    ("solve_seconds", "wall seconds to the first solving evaluation (evaluation excluded)", False),
    ("solve_steps", "env steps to the first solving evaluation", False),
    ("steps_per_second", "env steps per training second (evaluation excluded)", True),
]
TEXT_METRICS = [
    ("reward", "held-out mean reward after training", True),
    ("positive_fraction", "held-out POSITIVE fraction after training", True),
    ("kl", "KL to the reference after training", False),
    ("distinct_2", "distinct-2 of held-out completions after training", True),
    ("perplexity", "perplexity under the reference after training", False),
    (
        "judge_positive_fraction",
        "held-out POSITIVE fraction by the independent scorer (VADER for a classifier reward, "
        "the reward model for VADER), which the run did not train on",
        True,
    ),
    ("wall_seconds", "wall seconds of the run", False),
]


def parse_entries(text: str, task_kind: str, task_name: str) -> list[Entry]:
    from rl_lab import implementations
    from rl_lab.registry import get_algo

    entries = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        part, _, preset_file = part.partition("@")
        algo, _, impl = part.partition(":")
        get_algo(algo)
        found = implementations.find(algo, impl or None, task_kind, task_name)
        if preset_file and not Path(preset_file).is_file():
            raise UserError(f"no preset file {preset_file} (in {part}@{preset_file})")
        file = str(Path(preset_file).resolve()) if preset_file else None
        entries.append(Entry(algo, found.name, file))
    if len(entries) < 1 or len(set(entries)) != len(entries):
        raise UserError(
            f"expected distinct ALGO[:IMPL] entries separated by commas, got {text!r} "
            "(e.g. dqn,dqn:sb3)"
        )
    return name_preset_files(entries)


def name_preset_files(entries: list[Entry]) -> list[Entry]:
    """A preset file is named by its folder (tune's study, experiments/presets/vader/), or by
    folder/stem where two files share a folder: labels and run directories must differ."""
    files = {e.preset_file for e in entries if e.preset_file}  # one file may serve many algos
    folders = [Path(file).parent.name for file in files]
    named = []
    for entry in entries:
        if entry.preset_file:
            path = Path(entry.preset_file)
            shared = folders.count(path.parent.name) > 1
            name = f"{path.parent.name}/{path.stem}" if shared else path.parent.name
            entry = replace(entry, preset_name=name)
        named.append(entry)
    if len({e.label for e in named}) != len(named):
        raise UserError(
            "two entries would share a label (preset files with the same folder and name); "
            "rename one of the files"
        )
    return named


def parse_seeds(text: str) -> list[int]:
    """'100-109' or '100,101,105' (or both mixed)."""
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            seeds.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        raise UserError(f"--seeds expects e.g. 100-109 or 100,101, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds needs distinct non-negative seeds, got {text!r}")
    return seeds


def run_one(
    algo: str, impl: str, task: str, seed: int, run_dir: str, extra: list[str], preset=()
) -> int:
    """One run through the real command line, its output in run_dir/../sSEED.log (worker).
    `extra` is `--total-steps N` or nothing; `preset` is `--preset-file FILE` or nothing."""
    import torch

    from rl_lab.run import main

    torch.set_num_threads(1)
    path = Path(run_dir)
    if (path / "eval.json").is_file():
        return 0  # finished in an earlier call of the same compare
    if (path / "checkpoints" / "latest").is_file():
        argv = ["--resume", run_dir, "--no-dashboard", *extra[:2]]  # only --total-steps may change
    else:
        argv = [algo, task, "--impl", impl, "--seed", str(seed), "--run-dir", run_dir]
        argv += ["--no-dashboard", *extra, *preset]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"s{seed}.log", "a") as log:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            return main(argv)


def one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def cmd_compare(argv: list[str]) -> int:
    from rl_lab.registry import get_task
    from rl_lab.run import OneLineParser
    from rl_lab.runner import make_dir

    parser = OneLineParser(
        prog="python -m rl_lab.run compare",
        description="Run implementations side by side over seeds; report IQM with 95% CIs.",
    )
    parser.add_argument(
        "entries",
        help="ALGO[:IMPL][@PRESET_FILE],... e.g. dqn,dqn:sb3 or dqn,dqn@runs/tune-x/best_preset.json",
    )
    parser.add_argument("task", help="a task name or Gymnasium id")
    parser.add_argument(
        "--seeds",
        default="100-109",
        help="seeds, e.g. 100-109 or 100,101 (default: 100-109; presets are tuned on 0-99)",
    )
    parser.add_argument("--total-steps", type=int, default=None, help="budget (default: preset)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument(
        "--out", default=None, help="output directory (default: runs/compare-TASK-TIME)"
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="run each run as a Ray task on this cluster ('auto' or HOST:PORT; pip install "
        '-e ".[ray]")',
    )
    parser.add_argument("--cpus-per-task", type=float, default=1.0, help="Ray CPUs per run")
    args = parser.parse_args(argv)
    task = get_task(args.task)
    entries = parse_entries(args.entries, task.kind, args.task)
    seeds = parse_seeds(args.seeds)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.total_steps is not None and args.total_steps < 1:
        raise UserError(f"--total-steps must be at least 1, got {args.total_steps}")
    if not (math.isfinite(args.cpus_per_task) and args.cpus_per_task > 0):
        raise UserError(f"--cpus-per-task must be a positive number, got {args.cpus_per_task}")
    if args.ray_address:
        from rl_lab.ray_jobs import require_ray

        require_ray()  # a missing extra is one line before anything is written
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/compare-{task.name.replace('/', '_')}-{stamp}")
    extra = ["--total-steps", str(args.total_steps)] if args.total_steps else []
    check_out_dir(out)
    make_dir(out, "--out")
    jobs = [(entry, seed) for seed in seeds for entry in entries]  # interleaved
    print(f"compare: {len(jobs)} runs ({len(entries)} x {len(seeds)} seeds) in {out}", flush=True)
    failed = []
    started = time.perf_counter()
    arguments = {
        (entry, seed): (
            entry.algo,
            entry.impl,
            args.task,
            seed,
            str((out / entry.directory / f"s{seed}").resolve()),
            extra,
            entry.flags(),
        )
        for entry, seed in jobs
    }
    try:
        for (entry, seed), status in run_jobs(arguments, args):
            if status == 130:  # the run saved a checkpoint on Ctrl-C: stop them all
                raise KeyboardInterrupt
            if status != 0:
                failed.append(f"{entry.label} seed {seed} (status {status})")
            print(
                f"  {entry.label} seed {seed}: {'done' if status == 0 else 'FAILED'} "
                f"({time.perf_counter() - started:.0f} s into the compare)",
                flush=True,
            )
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command with --out {out} to continue")
        return 130
    command = "python -m rl_lab.run compare " + " ".join(argv)
    report = write_report(out, entries, seeds, task, command)
    print(report["markdown_table"])
    print(f"report: {out / 'report.md'}")
    if failed:
        print("failed runs (see their sSEED.log): " + "; ".join(failed))
        return 1
    return 0


def run_jobs(arguments: dict, args):
    """(job, exit status) of every run: in local worker processes, or one Ray task per run
    whose run directory comes back packed (so a cluster needs no shared filesystem)."""
    if args.ray_address:
        from rl_lab.ray_jobs import run_remote

        results = run_remote(
            run_packed, list(arguments.values()), args.ray_address, args.cpus_per_task
        )
        for job, (status, packed) in zip(arguments, results):
            unpack(packed, Path(arguments[job][4]))
            yield job, status
        return
    with ProcessPoolExecutor(args.workers, initializer=one_thread) as pool:
        futures = {pool.submit(run_one, *values): job for job, values in arguments.items()}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def run_packed(*values) -> tuple[int, bytes]:
    """run_one, then its run directory and log as a tar.gz (a Ray task's result)."""
    import io
    import tarfile

    status = run_one(*values)
    run_dir = Path(values[4])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(run_dir, arcname=run_dir.name)
        log = run_dir.parent / f"{run_dir.name}.log"
        if log.is_file():
            tar.add(log, arcname=log.name)
    return status, buffer.getvalue()


def unpack(packed: bytes, run_dir: Path) -> None:
    """A run directory from another machine; on this one (a local cluster) it is already here."""
    import io
    import tarfile

    if (run_dir / "config.json").is_file():
        return
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
        tar.extractall(run_dir.parent, filter="data")


def check_out_dir(out: Path) -> None:
    """An existing compare directory is fine (finished runs are kept, the report rewritten)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file: choose another --out")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {out} ({parent} is not writable): choose another --out")


# ---------------------------------------------------------------------------- per-run numbers


def read_eval(run_dir: Path) -> dict:
    """A finished run's eval.json. Runs write it atomically, so an unreadable one was damaged
    after the run (a copy onto a full disk, say): one line naming it, not a traceback."""
    path = run_dir / "eval.json"
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(
            f"{path} is empty or not JSON; delete {run_dir} and rerun the same compare to redo "
            "that run"
        ) from None


def run_numbers(run_dir: Path, kind: str) -> dict:
    """What the report aggregates, read from one run directory's eval.json."""
    report = read_eval(run_dir)
    if kind == "text":
        after = report["after"]
        return {
            "reward": after["mean_reward"],
            "positive_fraction": after["positive_fraction"],
            "kl": after["kl"],
            "distinct_2": after["distinct_2"],
            "perplexity": after["perplexity"],
            "wall_seconds": report["wall_seconds"],
            "reward_before": report["before"]["mean_reward"],
            **{key: after[key] for key in ("judge_positive_fraction",) if key in after},
            **paid_reward(run_dir),
        }
    train_seconds = report["wall_seconds"] - report["timers"]["eval"]
    solved = report["first_solved_step"] is not None
    return {
        "final_return": report["mean_return"],
        "solved": solved,
        # Unsolved runs count as their whole budget: a lower bound on their time to solve.
        "solve_seconds": report["first_solved_seconds"] if solved else train_seconds,
        "solve_steps": report["first_solved_step"] if solved else report["env_steps"],
        "steps_per_second": report["env_steps"] / max(train_seconds, 1e-9),
        "env_steps": report["env_steps"],
        "wall_seconds": report["wall_seconds"],
    }


def paid_reward(run_dir: Path) -> dict:
    """Which reward judged a text run's POSITIVE verdicts, and which score of it was paid (its
    held-out `reward`): runs are ranked by numbers on one scale only."""
    from rl_lab.lm.rewards import paid_score
    from rl_lab.runner import read_run_config

    try:
        algo = read_run_config(str(run_dir))["algo_config"]
    except UserError:  # no or a damaged config.json
        return {}  # unknown: ranked only beside runs as unknown, never against a known score
    reward = algo.get("reward", "model")
    score = paid_score(reward, algo.get("reward_score", "logit"))
    return {"judged_by": reward, "paid": f"{reward}, {score}"}


def ranking_metric(runs: list[dict]) -> str | None:
    """What P(x > y) compares for text runs: the held-out reward when every run paid the same
    score of the same reward, else the POSITIVE fraction when one reward judged them all, else
    nothing (a logit against a log-probability, or one judge's verdicts against another's)."""
    if len({n.get("paid") for n in runs}) == 1:
        return "reward"
    if len({n.get("judged_by") for n in runs}) == 1:
        return "positive_fraction"
    return None


def eval_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, returns) of a Gym run's evaluations, ending with its final evaluation."""
    points = logged_points(run_dir, "eval/mean_return")
    report = read_eval(run_dir)
    if report.get("mean_return") is not None:
        points.append((report.get("env_steps", 0), report["mean_return"]))
    return as_curve(points)


def training_reward_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(completions, mean reward of that step's training completions) of a text run: its
    held-out evaluations come only before and after training, too few points for a curve."""
    return as_curve(logged_points(run_dir, "charts/mean_reward"))


def logged_points(run_dir: Path, key: str) -> list[tuple]:
    """(step, value) of every row of a run's metrics.jsonl that logged `key`."""
    from rl_lab.logging import logged, read_metrics

    return logged(read_metrics(run_dir / "metrics.jsonl"), key)


def as_curve(points: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) arrays of (step, value) points, in step order."""
    points = sorted(points)
    return np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)


def iqm_curve(curves: list[tuple[np.ndarray, np.ndarray]], seed: int = 0):
    """IQM across runs on a shared grid of steps, with a 95% bootstrap band.

    A run's value at a step is its latest evaluation at or before it; a run that stopped
    early (solved) keeps its last value. Steps before every run has evaluated are left out.
    """
    grid = np.unique(np.concatenate([steps for steps, _ in curves]))
    grid = grid[grid >= max(steps[0] for steps, _ in curves)]
    values = np.stack(
        [vals[np.searchsorted(steps, grid, side="right") - 1] for steps, vals in curves], axis=1
    )  # (grid, runs)
    rows = [stats.interval(row, stats.iqm, reps=1000, seed=seed) for row in values]
    return grid, np.array(rows)


# ---------------------------------------------------------------------------- the report


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def write_report(out: Path, entries: list[Entry], seeds: list[int], task, command: str) -> dict:
    kind = task.kind
    metrics = TEXT_METRICS if kind == "text" else GYM_METRICS
    runs = {entry.label: {} for entry in entries}
    for entry in entries:
        for seed in seeds:
            run_dir = out / entry.directory / f"s{seed}"
            if (run_dir / "eval.json").is_file():
                runs[entry.label][seed] = run_numbers(run_dir, kind)
    results: dict = {}
    for entry in entries:
        numbers = list(runs[entry.label].values())
        summary: dict = {"runs": len(numbers), "seeds": sorted(runs[entry.label])}
        if numbers:
            for key, _, _ in metrics:
                column = [n[key] for n in numbers if key in n]
                if not column:  # e.g. no independent scorer was available to these runs
                    continue
                iqm = stats.interval(column, stats.iqm)
                mean = stats.interval(column, stats.mean)
                summary[key] = {"iqm": iqm[0], "iqm_ci": list(iqm[1:]), "mean": mean[0],
                                "mean_ci": list(mean[1:])}  # fmt: skip
            if kind == "gym":
                summary["solved_fraction"] = float(np.mean([n["solved"] for n in numbers]))
        results[entry.label] = summary
    improvement, unranked = {}, []
    for x in entries:
        for y in entries:
            xs, ys = runs[x.label], runs[y.label]
            if x == y or not xs or not ys:
                continue
            key = metrics[0][0] if kind == "gym" else ranking_metric([*xs.values(), *ys.values()])
            if key is None:
                unranked.append(f"P({x.label} > {y.label})")
                continue
            pair = f"P({x.label} > {y.label})" + ("" if key == metrics[0][0] else f" on {key}")
            point, low, high = stats.probability_of_improvement_interval(
                [n[key] for n in xs.values()], [n[key] for n in ys.values()]
            )
            improvement[pair] = {"point": point, "ci": [low, high]}
            if kind == "gym":  # faster to solve is better: compare negated times
                point, low, high = stats.probability_of_improvement_interval(
                    [-n["solve_seconds"] for n in xs.values()],
                    [-n["solve_seconds"] for n in ys.values()],
                )
                improvement[f"P({x.label} solves faster than {y.label})"] = {
                    "point": point,
                    "ci": [low, high],
                }
    table = markdown_table(entries, results, metrics, kind)
    report = {
        "command": command,
        "task": task.name,
        "seeds": seeds,
        "metrics": {key: text for key, text, _ in metrics},
        "results": results,
        "probability_of_improvement": improvement,
        "not_ranked": unranked,
        "runs": {label: {str(s): n for s, n in r.items()} for label, r in runs.items()},
        "markdown_table": table,
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_markdown(out, report, entries, metrics, kind)
    write_curves(out / "curves.png", out, entries, seeds, task)
    return report


def markdown_table(entries, results, metrics, kind) -> str:
    head = ["implementation", "runs"] + [key for key, _, _ in metrics]
    if kind == "gym":
        head.append("solved")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in entries:
        r = results[entry.label]
        cells = [f"`{entry.label}`", str(r["runs"])]
        for key, _, _ in metrics:
            if key in r:
                low, high = r[key]["iqm_ci"]
                cells.append(f"{fmt(r[key]['iqm'])} [{fmt(low)}, {fmt(high)}]")
            else:
                cells.append("-")
        if kind == "gym":
            cells.append(f"{r.get('solved_fraction', 0):.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(out: Path, report: dict, entries, metrics, kind) -> None:
    lines = [
        f"# compare on {report['task']}",
        "",
        f"`{report['command']}`",
        "",
        f"Seeds {report['seeds'][0]}-{report['seeds'][-1]} ({len(report['seeds'])} per "
        "implementation; presets are tuned on seeds 0-99). Each cell: IQM across seeds "
        "[95% stratified percentile-bootstrap CI, 10,000 resamples] (rliable's definitions).",
        "",
        report["markdown_table"],
        "",
        *[f"- `{key}`: {text}" for key, text, _ in metrics],
    ]
    if kind == "gym":
        lines.append(
            "- Unsolved runs count as their whole budget in `solve_seconds` and `solve_steps` "
            "(a lower bound on their time); `solved` is the fraction of seeds that solved."
        )
    first = report["results"][entries[0].label]
    time_key = "solve_seconds" if kind == "gym" else "wall_seconds"
    for entry in entries[1:]:
        other = report["results"][entry.label]
        if time_key in other and time_key in first and first[time_key]["iqm"] > 0:
            ratio = other[time_key]["iqm"] / first[time_key]["iqm"]
            lines.append(
                f"- IQM `{time_key}` of `{entry.label}` / `{entries[0].label}`: {ratio:.2f}x"
            )
    lines += ["", "Probability of improvement (ties count half), with 95% CI:", ""]
    for pair, value in report["probability_of_improvement"].items():
        low, high = value["ci"]
        lines.append(f"- {pair} = {value['point']:.2f} [{low:.2f}, {high:.2f}]")
    if kind == "text":
        lines.append(
            "- (on the held-out reward where both paid the same score of the same reward, else "
            "on the POSITIVE fraction where one reward judged both)"
        )
    lines += [f"- {pair}: not computed, the runs were judged by different rewards"
              for pair in report["not_ranked"]]  # fmt: skip
    lines += ["", "Means with 95% CIs:", ""]
    for entry in entries:
        r = report["results"][entry.label]
        cells = [
            f"{key} {fmt(r[key]['mean'])} [{fmt(r[key]['mean_ci'][0])}, {fmt(r[key]['mean_ci'][1])}]"
            for key, _, _ in metrics
            if key in r
        ]
        lines.append(f"- `{entry.label}`: " + "; ".join(cells))
    lines += ["", "![learning curves](curves.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))


def write_curves(path: Path, out: Path, entries, seeds, task) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rl_lab.report import save_figure

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    curve_of = eval_curve if task.kind == "gym" else training_reward_curve
    for entry in entries:
        curves = [
            curve_of(out / entry.directory / f"s{seed}")
            for seed in seeds
            if (out / entry.directory / f"s{seed}" / "eval.json").is_file()
        ]
        curves = [c for c in curves if len(c[0])]
        if not curves:
            continue
        grid, rows = iqm_curve(curves)
        label = f"{entry.label} (IQM of {len(curves)})"
        line = ax.plot(grid, rows[:, 0], marker=".", label=label)[0]
        ax.fill_between(grid, rows[:, 1], rows[:, 2], color=line.get_color(), alpha=0.2)
    if task.solved_at is not None:
        ax.axhline(task.solved_at, color="gray", linestyle="--", linewidth=1, label="solved")
    ax.set_xlabel("env steps" if task.kind == "gym" else "completions")
    ax.set_ylabel("evaluation return" if task.kind == "gym" else "training reward (step mean)")
    ax.set_title(f"{task.name}: IQM across seeds, 95% bootstrap band")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
