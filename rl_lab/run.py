"""Command line: `python -m rl_lab.run ALGO TASK [flags]`, `list`, `eval RUN_DIR`, `compare`,
`tune`.

Examples:
  python -m rl_lab.run dqn cartpole
  python -m rl_lab.run dqn acrobot --seed 1 --no-dashboard
  python -m rl_lab.run dqn cartpole --lr 5e-4 --double --no-dueling --run-dir runs/mine
  python -m rl_lab.run --resume runs/mine
  python -m rl_lab.run list
  python -m rl_lab.run eval runs/mine --episodes 50 --video
  python -m rl_lab.run dqn cartpole --impl sb3        # Stable-Baselines3's DQN, same run dir
  python -m rl_lab.run compare dqn,dqn:sb3 cartpole --seeds 100-109 --workers 2
  python -m rl_lab.run tune dqn cartpole --trials 20 --total-steps 20000 --workers 2

A user mistake prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rl_lab import implementations
from rl_lab.config import RunConfig
from rl_lab.errors import RunFault, UserError

if TYPE_CHECKING:
    from envs.tasks import Task
    from rl_lab.registry import AlgoSpec


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


def shown(value: Any) -> str:
    """A default as the user would type it (tuples as N,N)."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def add_config_flags(
    parser: argparse.ArgumentParser, config_cls: type, title: str, preset: dict | None = None
) -> None:
    """One flag per dataclass field, help text from the field's metadata and the default this
    command runs with (the preset's value where it sets one); default None = "not given", so
    presets are only overridden by flags the user typed."""
    group = parser.add_argument_group(title)
    preset = preset or {}
    for spec in dataclasses.fields(config_cls):
        flag = "--" + spec.name.replace("_", "-")
        if flag in parser._option_string_actions:  # shared with the run settings (e.g. --seed)
            continue
        default = (
            spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        )
        if spec.name in preset and preset[spec.name] != default:
            note = (
                f"default: {shown(preset[spec.name])} from the preset, {shown(default)} without it"
            )
        else:
            note = f"default: {shown(default)}"
        help_text = f"{spec.metadata.get('help', '')} ({note})".replace("%", "%%")
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
    table.add_column("implementations (--impl)")
    table.add_column("description")
    for spec in ALGOS.values():
        table.add_row(
            spec.name, ", ".join(spec.task_kinds), ", ".join(spec.impl_names), spec.description
        )
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
    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed must be at least 0, got {args.seed}")
    from rl_lab.runner import evaluate_run_dir

    evaluate_run_dir(args.run_dir, args.episodes, args.seed, args.video)
    return 0


def flag_value(argv: list[str], flag: str = "--impl") -> str | None:
    """The value of one flag, read before the full parser exists (it picks the parser)."""
    found = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    return found


@dataclass
class TrainRequest:
    """`python -m rl_lab.run ALGO TASK [flags]` (or `--resume DIR`), parsed and looked up."""

    spec: AlgoSpec
    task: Task
    module: ModuleType
    experiment_cls: type
    run_flags: dict[str, Any]
    algo_flags: dict[str, Any]
    run_dir: str | None
    resume: str | None
    dashboard: bool


def parse_train(argv: list[str]) -> TrainRequest:
    """Parse a training command line; any mistake in it is a UserError. Shared by the CLI and
    the tests, which then build the configs the way a run does (runner.build_configs)."""
    from rl_lab import runner
    from rl_lab.presets import preset
    from rl_lab.registry import get_algo, get_task

    resume_only = argv[:1] == ["--resume"]
    algo_name, task_name = (
        (None, None) if resume_only else (argv[0], argv[1] if len(argv) > 1 else None)
    )
    if not resume_only and (task_name is None or task_name.startswith("-")):
        raise UserError(
            f"missing TASK: use `python -m rl_lab.run {algo_name} TASK` "
            "(`python -m rl_lab.run list` shows tasks)"
        )
    rest = argv if resume_only else argv[2:]

    impl_name = flag_value(rest)
    resume_dir = flag_value(rest, "--resume")
    if resume_only or resume_dir is not None:
        saved = runner.read_run_config(resume_dir or "")
        saved_impl = saved.get("impl")  # absent before --impl existed: the default one
        if saved_impl is not None and impl_name not in (None, saved_impl):
            raise UserError(
                f"{resume_dir} is a --impl {saved_impl} run: drop --impl {impl_name} "
                "(--resume continues with the saved implementation)"
            )
        impl_name = saved_impl or impl_name
        if resume_only:
            algo_name, task_name = saved["algo"], saved["task"]
    spec = get_algo(algo_name)
    task = get_task(task_name)
    if task.kind not in spec.task_kinds:
        raise UserError(
            f"{algo_name} does not run {task.kind} tasks such as {task_name!r}; "
            f"it runs {', '.join(spec.task_kinds)} tasks"
        )
    impl = implementations.find(algo_name, impl_name, task.kind, task_name)
    module = impl.module()
    algo_config_cls = module.Config
    experiment_cls = impl.experiment_class()
    defaults = preset(spec.name, task.name, task.kind)

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
        "--impl",
        default=impl.name,
        choices=spec.impl_names,
        help=f"who implements {algo_name}: {', '.join(spec.impl_names)} (default: "
        f"{implementations.default_name(algo_name, task.kind)})",
    )
    parser.add_argument(
        "--preset-file",
        metavar="FILE",
        default=None,
        help='run a preset from a JSON file ({"run": {...}, "algo": {...}}, as `tune` '
        "writes best_preset.json): its settings replace the preset's, flags override both",
    )
    if experiment_cls.run_settings:
        parser.add_argument(
            "--no-dashboard",
            action="store_true",
            help="plain log lines instead of the live dashboard",
        )
        add_config_flags(parser, RunConfig, "run settings", defaults["run"])
    add_config_flags(parser, algo_config_cls, f"{algo_name} settings", defaults["algo"])
    parser.set_defaults(no_dashboard=False)
    args = parser.parse_args(rest)
    run_flags = given(args, RunConfig) if experiment_cls.run_settings else {}
    algo_flags = given(args, algo_config_cls)
    if args.preset_file:
        if args.resume:
            raise UserError("--resume continues with the saved config; drop --preset-file")
        from rl_lab.presets import read_preset_file

        from_file = read_preset_file(args.preset_file, RunConfig, algo_config_cls)
        run_flags = {**from_file["run"], **run_flags} if experiment_cls.run_settings else {}
        algo_flags = {**from_file["algo"], **algo_flags}
    return TrainRequest(
        spec,
        task,
        module,
        experiment_cls,
        run_flags,
        algo_flags,
        args.run_dir,
        args.resume,
        not args.no_dashboard,
    )


def cmd_train(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1].startswith("-"):
        if argv[:1] != ["--resume"] and ("-h" in argv or "--help" in argv):
            print(usage())
            return 0
    r = parse_train(argv)
    if r.resume:
        experiment = r.experiment_cls.resume(
            r.resume, r.spec, r.task, r.module, r.run_flags, r.algo_flags
        )
    else:
        experiment = r.experiment_cls.create(
            r.spec, r.task, r.module, r.module.Config, r.run_flags, r.algo_flags, r.run_dir
        )
    return experiment.train(dashboard=r.dashboard)


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
        if argv[0] == "compare":
            from rl_lab.compare import cmd_compare

            return cmd_compare(argv[1:])
        if argv[0] == "tune":
            from rl_lab.tune import cmd_tune

            return cmd_tune(argv[1:])
        return cmd_train(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunFault as error:
        print(f"error: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:  # outside the training loop, which saves and returns 130 itself
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    from rl_lab.lm.distributed import exit_process

    exit_process(main())
