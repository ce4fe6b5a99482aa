"""`python -m rl_lab.run tune ALGO TASK`: hyperparameter search on Optuna.

A study samples settings with TPE from the search space declared beside the algorithm's config
(`search=` in the field metadata, rl_lab/search.py) and runs each trial as normal runs (one per
seed, each its own run directory under STUDY_DIR/trials/). The median pruner reads the lab's own
periodic evaluations: a trial whose evaluations fall below the median of earlier trials at the
same step stops early. The study lives in an Optuna storage (SQLite in the study directory by
default; an RDB URL lets several machines join one study), so running the same command again
continues it, and `optuna-dashboard STORAGE` shows it live.

Tuning uses seeds 0-99 only; published numbers come from `compare` on seeds >= 100.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from rl_lab.errors import UserError
from rl_lab.loop import Callback, RunContext

TUNING_SEEDS = 100  # trials draw seeds from 0-99; held-out checks use 100 and up


@dataclass(frozen=True)
class StudyPlan:
    """Everything a worker needs to run trials of one study (picklable, for processes/Ray)."""

    algo: str
    task: str
    storage: str
    study_name: str
    out_dir: str
    total_steps: int  # per run
    seeds_per_trial: int


class PruneOnEval(Callback):
    """Reports each periodic evaluation to the Optuna trial; stops the run once it is pruned."""

    def __init__(self, trial, step_offset: int):
        self.trial, self.step_offset, self.pruned = trial, step_offset, False

    def on_eval(self, run: RunContext, result) -> None:
        self.trial.report(result.mean_return, self.step_offset + run.env_steps)
        self.pruned = self.pruned or self.trial.should_prune()

    def should_stop(self, run: RunContext) -> bool:
        if self.pruned:
            run.stop_reason = "pruned"
        return self.pruned


def run_trial(trial, plan: StudyPlan) -> float:
    """The objective: mean final evaluation return over the trial's seeds."""
    import optuna

    from rl_lab.registry import get_algo, get_task
    from rl_lab.runner import Experiment
    from rl_lab.search import suggest

    spec, task = get_algo(plan.algo), get_task(plan.task)
    module = import_algo(spec, task)
    settings = suggest(trial, module.Config)
    finals = []
    for index in range(plan.seeds_per_trial):
        seed = (trial.number * plan.seeds_per_trial + index) % TUNING_SEEDS
        run_dir = Path(plan.out_dir) / "trials" / f"trial-{trial.number:04d}-s{seed}"
        run_flags = {"seed": seed, "total_steps": plan.total_steps}
        try:
            experiment = Experiment.create(
                spec, task, module, module.Config, run_flags, dict(settings), run_dir
            )
        except UserError as error:  # e.g. a minibatch larger than the sampled rollout
            trial.set_user_attr("invalid", str(error))
            raise optuna.TrialPruned(f"invalid settings: {error}") from None
        trial.set_user_attr("run_dirs", [*trial.user_attrs.get("run_dirs", []), str(run_dir)])
        pruner = PruneOnEval(trial, index * plan.total_steps)
        with open(run_dir / "output.log", "w") as log, contextlib.redirect_stdout(log):
            status = experiment.train(dashboard=False, extra_callbacks=[pruner])
        if status != 0:
            raise RuntimeError(f"trial run {run_dir} ended with status {status}")
        if pruner.pruned:
            raise optuna.TrialPruned()
        finals.append(json.loads((run_dir / "eval.json").read_text())["mean_return"])
    return sum(finals) / len(finals)


def import_algo(spec, task):
    import importlib

    return importlib.import_module(spec.modules[task.kind])


def build_run_config(spec, task):
    from rl_lab.config import RunConfig
    from rl_lab.presets import preset

    return RunConfig(**preset(spec.name, task.name, task.kind)["run"])


def open_study(plan: StudyPlan, sampler_seed: int | None = None):
    import optuna

    return optuna.load_study(
        study_name=plan.study_name,
        storage=make_storage(plan.storage),
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=make_pruner(plan),
    )


def quiet_optuna() -> None:
    """No INFO line per trial and no 'experimental' warnings: tune prints its own lines."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def make_storage(url: str):
    import optuna

    # A heartbeat lets a resumed study (or another machine) fail the trials of a dead worker.
    return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)


def make_pruner(plan: StudyPlan):
    import optuna

    # Four unpruned trials first, and no verdict in the first quarter of a run's budget, when
    # every policy is still near random.
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=plan.total_steps // 4)


def work(plan: StudyPlan, trials: int, worker: int) -> None:
    """One worker: run `trials` trials of the study (a process or a Ray task)."""
    import torch

    torch.set_num_threads(1)
    quiet_optuna()
    study = open_study(plan, sampler_seed=worker + len(finished_trials(plan)))
    study.optimize(lambda trial: run_trial(trial, plan), n_trials=trials, catch=(RuntimeError,))


def finished_trials(plan: StudyPlan) -> list:
    import optuna

    study = optuna.load_study(study_name=plan.study_name, storage=make_storage(plan.storage))
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


# ---------------------------------------------------------------------------- the command


def parse(argv: list[str]) -> argparse.Namespace:
    from rl_lab.run import OneLineParser

    parser = OneLineParser(
        prog="python -m rl_lab.run tune",
        description="Tune ALGO on TASK with Optuna (TPE sampler, median pruning on evaluations).",
    )
    parser.add_argument("algo", help="algorithm to tune (its config declares the search space)")
    parser.add_argument("task", help="Gym task name or Gymnasium id")
    parser.add_argument("--trials", type=int, required=True, help="trials the study should hold")
    parser.add_argument(
        "--total-steps", type=int, default=None, help="env steps per run (default: the preset's)"
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default: sqlite:///OUT/study.db); an RDB URL "
        "(postgresql://..., mysql://...) lets several machines join one study",
    )
    parser.add_argument(
        "--study-name", default=None, help="study in the storage (may be left out if it has one)"
    )
    parser.add_argument("--workers", type=int, default=1, help="trials run at once here")
    parser.add_argument(
        "--seeds-per-trial", type=int, default=1, help="runs per trial (seeds from 0-99)"
    )
    parser.add_argument(
        "--out", default=None, help="study directory (default: runs/tune-ALGO-TASK)"
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="run the workers as Ray tasks on this cluster ('auto' or HOST:PORT)",
    )
    parser.add_argument("--cpus-per-task", type=float, default=1.0, help="Ray CPUs per worker")
    args = parser.parse_args(argv)
    for flag, value, low in (
        ("--trials", args.trials, 1),
        ("--workers", args.workers, 1),
        ("--seeds-per-trial", args.seeds_per_trial, 1),
        ("--total-steps", args.total_steps, 1),
    ):
        if value is not None and value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    if args.seeds_per_trial > TUNING_SEEDS:
        raise UserError(f"--seeds-per-trial must be at most {TUNING_SEEDS} (seeds 0-99)")
    if not (math.isfinite(args.cpus_per_task) and args.cpus_per_task > 0):
        raise UserError(f"--cpus-per-task must be a positive number, got {args.cpus_per_task}")
    return args


def cmd_tune(argv: list[str]) -> int:
    args = parse(argv)
    quiet_optuna()
    from rl_lab.registry import get_algo, get_task
    from rl_lab.search import search_space

    spec, task = get_algo(args.algo), get_task(args.task)
    if task.kind != "gym":
        raise UserError(f"tune runs Gym tasks; {task.name!r} is a {task.kind} task")
    if task.kind not in spec.task_kinds:
        raise UserError(f"{spec.name} does not run {task.kind} tasks")
    if not search_space(import_algo(spec, task).Config):
        raise UserError(f"{spec.name} declares no search space: nothing to tune")
    out_dir = Path(args.out or Path("runs") / f"tune-{spec.name}-{task.name.replace('/', '_')}")
    default_name = f"{spec.name}-{task.name}"
    if args.storage:  # a bad URL is refused before anything is written
        study_name = resolve_study_name(args.storage, args.study_name, default_name)
    from rl_lab.runner import make_dir

    make_dir(out_dir, "--out")
    storage = args.storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    if not args.storage:
        study_name = resolve_study_name(storage, args.study_name, default_name)
    plan = StudyPlan(
        spec.name,
        task.name,
        storage,
        study_name,
        str(out_dir.resolve()),
        args.total_steps or build_run_config(spec, task).total_steps,
        args.seeds_per_trial,
    )
    create_or_check_study(plan)
    remaining = args.trials - len(finished_trials(plan))
    if remaining > 0:
        workers = min(args.workers, remaining)
        shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
        print(
            f"study {plan.study_name!r} in {storage}: running {remaining} trial(s) with "
            f"{workers} worker(s); trial run directories in {out_dir / 'trials'}",
            flush=True,
        )
        run_workers(plan, shares, args.ray_address, args.cpus_per_task)
    return write_report(plan, out_dir)


def resolve_study_name(storage: str, name: str | None, default: str) -> str:
    import optuna

    try:
        names = optuna.study.get_all_study_names(storage=make_storage(storage))
    except Exception as error:  # SQLAlchemy raises many types for a bad or unreachable URL
        raise UserError(
            f"cannot open --storage {storage} ({type(error).__name__}: {error})"
        ) from None
    if name is not None:
        return name
    if len(names) > 1:
        raise UserError(
            f"{storage} holds several studies ({', '.join(names)}): choose one with --study-name"
        )
    return names[0] if names else default


def create_or_check_study(plan: StudyPlan) -> None:
    """Create the study, or check that an existing one tunes the same thing."""
    import optuna

    study = optuna.create_study(
        study_name=plan.study_name,
        storage=make_storage(plan.storage),
        direction="maximize",
        load_if_exists=True,
    )
    wanted = {"algo": plan.algo, "task": plan.task, "total_steps": plan.total_steps}
    wanted["seeds_per_trial"] = plan.seeds_per_trial
    saved = {key: study.user_attrs[key] for key in wanted if key in study.user_attrs}
    if not saved:
        for key, value in wanted.items():
            study.set_user_attr(key, value)
    elif saved != wanted:
        raise UserError(
            f"study {plan.study_name!r} tunes {saved}, not {wanted}: choose another "
            "--study-name or --out, or the same settings to continue it"
        )


def run_workers(plan: StudyPlan, shares: list[int], ray_address, cpus_per_task: float) -> None:
    """The workers, as local processes or as Ray tasks; every result goes to the storage."""
    if ray_address:
        from rl_lab.ray_jobs import run_remote

        run_remote(
            work, [(plan, share, i) for i, share in enumerate(shares)], ray_address, cpus_per_task
        )
        return
    if len(shares) == 1:
        work(plan, shares[0], 0)
        return
    # spawn: a fresh interpreter per worker (forking a process that imported torch is fragile)
    with ProcessPoolExecutor(len(shares), mp_context=get_context("spawn")) as pool:
        for future in [pool.submit(work, plan, share, i) for i, share in enumerate(shares)]:
            future.result()


# ---------------------------------------------------------------------------- the report


def write_report(plan: StudyPlan, out_dir: Path) -> int:
    """best_preset.json, report.md and the Optuna plots; prints where they are."""
    import optuna

    from rl_lab.checkpoint import atomic_write_text

    study = optuna.load_study(study_name=plan.study_name, storage=make_storage(plan.storage))
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise UserError(
            f"no trial of study {plan.study_name!r} completed (all pruned or failed; see "
            f"{out_dir / 'trials'}): run more --trials"
        )
    best = study.best_trial
    config = json.loads((Path(best.user_attrs["run_dirs"][0]) / "config.json").read_text())
    run_settings = {k: v for k, v in config["run"].items() if k != "seed"}
    preset = {
        "run": run_settings,
        "algo": config["algo_config"],
        "source": {
            "study": plan.study_name,
            "storage": plan.storage,
            "trial": best.number,
            "value": best.value,
            "seeds": [int(Path(d).name.rsplit("-s", 1)[1]) for d in best.user_attrs["run_dirs"]],
        },
    }
    best_path = out_dir / "best_preset.json"
    atomic_write_text(best_path, json.dumps(preset, indent=2) + "\n")
    importances = param_importances(study)
    atomic_write_text(out_dir / "report.md", report_markdown(plan, trials, best, importances))
    write_plots(study, out_dir)
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in trials:
        counts[trial.state.name.lower()] += 1
    print(
        f"{len(trials)} trials ({counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail']} failed); best: trial {best.number}, mean final return "
        f"{best.value:.2f} with {best.params}\nbest preset: {best_path}; report: "
        f"{out_dir / 'report.md'}\nThese settings were tuned on seeds 0-99; check them on "
        f"held-out seeds against the shipped preset:\n  python -m rl_lab.run compare "
        f"{plan.algo},{plan.algo}@{best_path} {plan.task} --seeds 100-109"
    )
    return 0


def param_importances(study) -> dict[str, float]:
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # too few complete trials, or no spread in values
        return {}


def report_markdown(plan: StudyPlan, trials, best, importances: dict) -> str:
    import optuna

    ranked = sorted(
        trials,
        key=lambda t: (t.state != optuna.trial.TrialState.COMPLETE, -(t.value or -math.inf)),
    )
    lines = [
        f"# Tuning {plan.algo} on {plan.task}",
        "",
        f"Study `{plan.study_name}` in `{plan.storage}`: {len(trials)} trials, objective the mean "
        f"final greedy return over {plan.seeds_per_trial} seed(s) from 0-99, "
        f"{plan.total_steps:,} env steps per run; TPE sampler, median pruner on the "
        "periodic evaluations.",
        "",
        f"Best: trial {best.number}, value {best.value:.2f}; settings in `best_preset.json`.",
        "",
        "| trial | state | value | last evaluation (step) | settings |",
        "|---|---|---|---|---|",
    ]
    for trial in ranked[:20]:
        value = "-" if trial.value is None else f"{trial.value:.2f}"
        last = (
            f"{trial.intermediate_values[max(trial.intermediate_values)]:.2f} "
            f"({max(trial.intermediate_values):,})"
            if trial.intermediate_values
            else "-"
        )
        settings = ", ".join(f"{k}={format_value(v)}" for k, v in trial.params.items())
        lines.append(
            f"| {trial.number} | {trial.state.name.lower()} | {value} | {last} | {settings} |"
        )
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    lines += ["", f"Pruned trials: {pruned} of {len(trials)}.", ""]
    if importances:
        lines += [
            "## Parameter importances (fANOVA)",
            "",
            "| parameter | importance |",
            "|---|---|",
        ]
        lines += [f"| {name} | {value:.3f} |" for name, value in importances.items()]
        lines.append("")
    lines += [
        "![history](history.png)",
        "",
        "![importances](importances.png)",
        "",
        "![parallel coordinates](parallel_coordinates.png)",
        "",
    ]
    return "\n".join(lines)


def format_value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_plots(study, out_dir: Path) -> None:
    """Optuna's matplotlib plots as PNG; a plot that needs more trials is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization.matplotlib as plots

    from rl_lab.report import save_figure

    for name, plot in (
        ("history", plots.plot_optimization_history),
        ("importances", plots.plot_param_importances),
        ("parallel_coordinates", plots.plot_parallel_coordinate),
    ):
        path = out_dir / f"{name}.png"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks these plots experimental
            try:
                axes = plot(study)
            except (RuntimeError, ValueError):
                continue
        figure = axes.figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        save_figure(figure, path, dpi=100)
