"""Command line: `python -m rl_lab.run ALGO TASK [flags]`, `list`, `eval RUN_DIR`, `tune`.

Examples:
  python -m rl_lab.run dqn cartpole
  python -m rl_lab.run dqn acrobot --seed 1 --no-dashboard
  python -m rl_lab.run dqn cartpole --lr 5e-4 --double --no-dueling --run-dir runs/mine
  python -m rl_lab.run --resume runs/mine
  python -m rl_lab.run list
  python -m rl_lab.run eval runs/mine --episodes 50 --video
  python -m rl_lab.run tune dqn cartpole --trials 20 --total-steps 20000 --workers 2

A user mistake prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from typing import Any

from rl_lab.config import RunConfig
from rl_lab.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (what is wrong, where to look) and exit 2."""

    def error(self, message: str):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def parse_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type, title: str) -> None:
    """One flag per dataclass field, help text from the field's metadata; default None =
    "not given", so presets are only overridden by flags the user typed."""
    group = parser.add_argument_group(title)
    for spec in dataclasses.fields(config_cls):
        flag = "--" + spec.name.replace("_", "-")
        if flag in parser._option_string_actions:  # shared with the run settings (e.g. --seed)
            continue
        default = (
            spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        )
        help_text = f"{spec.metadata.get('help', '')} (default: {default})"
        if spec.type in ("bool", bool):
            group.add_argument(
                flag,
                dest=spec.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        elif spec.type in ("tuple", tuple):
            group.add_argument(
                flag, dest=spec.name, type=parse_tuple, default=None, metavar="N,N", help=help_text
            )
        else:
            kind = {"int": int, "float": float, "str": str}.get(spec.type, spec.type)
            choices = spec.metadata.get("choices")
            group.add_argument(
                flag,
                dest=spec.name,
                type=kind,
                default=None,
                choices=choices,
                metavar=spec.name.upper() if not choices else None,
                help=help_text,
            )


def given(namespace: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    names = {spec.name for spec in dataclasses.fields(config_cls)}
    return {k: v for k, v in vars(namespace).items() if k in names and v is not None}


def usage() -> str:
    from rl_lab.registry import ALGOS, TASKS

    return (
        __doc__ + f"\nAlgorithms: {', '.join(ALGOS)}\nTasks: {', '.join(TASKS)}, "
        "or any Gymnasium id\n`python -m rl_lab.run ALGO TASK --help` lists that "
        "algorithm's flags."
    )


def cmd_list() -> int:
    from rich.console import Console
    from rich.table import Table

    from rl_lab.presets import all_presets
    from rl_lab.registry import ALGOS, TASKS

    console = Console()
    table = Table(title="algorithms")
    table.add_column("name")
    table.add_column("task kinds")
    table.add_column("description")
    for spec in ALGOS.values():
        table.add_row(spec.name, ", ".join(spec.task_kinds), spec.description)
    console.print(table)
    table = Table(title="tasks (or pass any Gymnasium id, e.g. CartPole-v1)")
    for column in ("name", "environment", "solved at", "description"):
        table.add_column(column)
    for task in TASKS.values():
        solved = "-" if task.solved_at is None else f"{task.solved_at:g}"
        table.add_row(task.name, task.env_id, solved, task.description)
    console.print(table)
    table = Table(title="presets (tuned defaults per algorithm and task)")
    table.add_column("algo")
    table.add_column("task")
    table.add_column("settings")
    for (algo, task), values in all_presets().items():
        settings = {**values.get("run", {}), **values.get("algo", {})}
        table.add_row(algo, task, ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults")
    console.print(table)
    return 0


def cmd_eval(argv: list[str]) -> int:
    parser = OneLineParser(
        prog="python -m rl_lab.run eval", description="Re-evaluate a saved run's latest checkpoint."
    )
    parser.add_argument("run_dir", help="a run directory written by `python -m rl_lab.run`")
    parser.add_argument("--episodes", type=int, default=None, help="episodes (default: the run's)")
    parser.add_argument("--seed", type=int, default=None, help="evaluation seed")
    parser.add_argument("--video", action="store_true", help="record an MP4 of the greedy agent")
    args = parser.parse_args(argv)
    if args.episodes is not None and args.episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {args.episodes}")
    from rl_lab.runner import evaluate_run_dir

    evaluate_run_dir(args.run_dir, args.episodes, args.seed, args.video)
    return 0


def cmd_train(argv: list[str]) -> int:
    from rl_lab.registry import get_algo, get_task

    resume_only = argv[:1] == ["--resume"]
    algo_name, task_name = (
        (None, None) if resume_only else (argv[0], argv[1] if len(argv) > 1 else None)
    )
    if not resume_only and (task_name is None or task_name.startswith("-")):
        if "-h" in argv or "--help" in argv:
            print(usage())
            return 0
        raise UserError(
            f"missing TASK: use `python -m rl_lab.run {algo_name} TASK` "
            "(`python -m rl_lab.run list` shows tasks)"
        )
    rest = argv if resume_only else argv[2:]

    if resume_only:
        from rl_lab.runner import read_run_config

        saved = read_run_config(rest[1] if len(rest) > 1 else "")
        algo_name, task_name = saved["algo"], saved["task"]
    spec = get_algo(algo_name)
    task = get_task(task_name)
    if task.kind not in spec.task_kinds:
        raise UserError(
            f"{algo_name} does not run {task.kind} tasks such as {task_name!r}; "
            f"it runs {', '.join(spec.task_kinds)} tasks"
        )
    module = importlib.import_module(spec.modules[task.kind])
    algo_config_cls = module.Config

    parser = OneLineParser(
        prog=f"python -m rl_lab.run {algo_name} {task_name}",
        description=(module.__doc__ or "").strip().splitlines()[0],
    )
    parser.add_argument(
        "--run-dir",
        default=None,
        help="where to write the run (default: runs/ALGO-TASK-sSEED-TIME)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue a run from its last checkpoint, with its saved config",
    )
    parser.add_argument(
        "--no-dashboard", action="store_true", help="plain log lines instead of the live dashboard"
    )
    parser.add_argument(
        "--preset-file",
        metavar="FILE",
        default=None,
        help='run a preset from a JSON file ({"run": {...}, "algo": {...}}, as `tune` '
        "writes best_preset.json): its settings replace the preset's, flags override both",
    )
    add_config_flags(parser, RunConfig, "run settings")
    add_config_flags(parser, algo_config_cls, f"{algo_name} settings")
    args = parser.parse_args(rest)

    from rl_lab import runner

    # Text tasks bring their own Experiment (same interface); Gym tasks share runner's.
    Experiment = getattr(module, "Experiment", runner.Experiment)
    run_flags, algo_flags = given(args, RunConfig), given(args, algo_config_cls)
    if args.preset_file:
        if args.resume:
            raise UserError("--resume continues with the saved config; drop --preset-file")
        from rl_lab.presets import read_preset_file

        from_file = read_preset_file(args.preset_file, RunConfig, algo_config_cls)
        run_flags = {**from_file["run"], **run_flags}
        algo_flags = {**from_file["algo"], **algo_flags}
    if args.resume:
        experiment = Experiment.resume(args.resume, spec, task, module, run_flags, algo_flags)
    else:
        experiment = Experiment.create(
            spec, task, module, algo_config_cls, run_flags, algo_flags, args.run_dir
        )
    return experiment.train(dashboard=not args.no_dashboard)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(usage())
            return 0
        if argv[0] == "list":
            return cmd_list()
        if argv[0] == "eval":
            return cmd_eval(argv[1:])
        if argv[0] == "tune":
            from rl_lab.tune import cmd_tune

            return cmd_tune(argv[1:])
        return cmd_train(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside the training loop, which saves and returns 130 itself
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
