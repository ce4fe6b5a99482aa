"""Fuzzing the command line: random values for every flag of every algorithm x task kind.

Each command line goes through what `python -m rl_lab.run ALGO TASK ...` does before it builds
envs or models (`run.parse_train`, then `runner.build_configs`): it is either accepted, with
every value in range, or refused with a UserError of one line that names a flag the user
gave. Any other exception is a bug. A few real subprocess runs check both ends for real.
"""

import dataclasses
import importlib
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rl_lab import runner
from rl_lab.config import RunConfig
from rl_lab.errors import UserError
from rl_lab.registry import ALGOS, get_task
from rl_lab.run import parse_train
from tests.cli_helpers import cli, files_under

# Every algorithm with every kind of task it runs (gym: a discrete and a continuous one).
PAIRS = [
    (algo, task)
    for algo, spec in ALGOS.items()
    for kind in spec.task_kinds
    for task in {"gym": ["cartpole", "pendulum"], "text": ["sentiment"]}[kind]
]

SPECIAL = [
    "nan",
    "-nan",
    "inf",
    "-inf",
    "1e400",
    "-1e400",
    "1e-400",
    "0",
    "-0.0",
    "-1",
    "1",
    "0.5",
    "1e18",
    str(2**63),
    str(10**30),
    "0x10",
    "1_000",
    " 7 ",
    "",
    "true",
    "None",
    "64,64",
    "64,,x",
    "-3,4",
    "relu",
    "cuda:0",
]
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
value = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.integers(-3, 300), max_size=4).map(lambda xs: ",".join(map(str, xs))),
    text,
)


def flags_of(algo: str, task: str) -> list[tuple[str, bool, tuple | None]]:
    """(flag, is_bool, choices) for every config field this command takes."""
    spec = ALGOS[algo]
    module = importlib.import_module(spec.modules[get_task(task).kind])
    experiment_cls = getattr(module, "Experiment", runner.Experiment)
    classes = [RunConfig, module.Config] if experiment_cls.run_settings else [module.Config]
    found = {}
    for cls in classes:
        for field in dataclasses.fields(cls):
            flag = "--" + field.name.replace("_", "-")
            found.setdefault(flag, (field.type == "bool", field.metadata.get("choices")))
    return [(flag, is_bool, choices) for flag, (is_bool, choices) in found.items()]


@st.composite
def command_lines(draw, algo: str, task: str) -> list[str]:
    fields = draw(st.lists(st.sampled_from(flags_of(algo, task)), min_size=1, max_size=5))
    argv = [algo, task]
    for flag, is_bool, choices in fields:
        if is_bool:
            argv.append(
                draw(
                    st.one_of(
                        st.sampled_from([flag, "--no-" + flag[2:]]),
                        value.map(f"{flag}={{}}".format),
                    )
                )
            )
        else:
            options = [value] + ([st.sampled_from(choices)] if choices else [])
            argv.append(f"{flag}={draw(st.one_of(*options))}")
    return argv


def check_command_line(argv: list[str]) -> None:
    try:
        request = parse_train(argv)
        run_config, algo_config = runner.build_configs(
            request.spec, request.task, request.module, request.run_flags, request.algo_flags
        )
    except UserError as error:
        message = str(error)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        given_flags = {arg.split("=")[0] for arg in argv[2:]}
        given_flags |= {"--" + flag[5:] for flag in given_flags if flag.startswith("--no-")}
        assert any(flag in message for flag in given_flags), (argv, message)
        return
    for config in (run_config, algo_config):
        for field in dataclasses.fields(config):
            number = getattr(config, field.name)
            if isinstance(number, float) and not field.metadata.get("allow_inf"):
                assert math.isfinite(number), (argv, field.name, number)


@pytest.mark.parametrize("algo, task", PAIRS)
def test_random_flag_values_are_accepted_or_one_line(algo, task):
    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,  # the same examples in CI every time
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(command_lines(algo, task))
    def check(argv):
        check_command_line(argv)

    check()


def test_every_algorithm_and_task_kind_is_fuzzed():
    kinds = {(algo, get_task(task).kind) for algo, task in PAIRS}
    assert kinds == {(a, k) for a, spec in ALGOS.items() for k in spec.task_kinds}


@pytest.mark.parametrize(
    "argv, accepted",
    [
        (["dqn", "cartpole", "--lr=1e-3", "--gamma=0.5", "--no-double", "--hidden=16"], True),
        (["ppo", "pendulum", "--log-std-init=-0.5", "--n-steps=64", "--batch-size=32"], True),
        (["dqn", "cartpole", "--lr=nan", "--gamma=0.5"], False),
        (["ppo", "pendulum", "--n-steps=1e3"], False),
    ],
)
def test_real_command_lines_agree_with_the_in_process_check(argv, accepted, tmp_path):
    run_dir = tmp_path / "run"
    result = cli(
        *argv, "--total-steps=200", "--eval-episodes=1", "--no-dashboard", "--run-dir", run_dir
    )
    if accepted:
        assert result.returncode == 0, result.stderr
        assert (run_dir / "eval.json").is_file()
    else:
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert files_under(tmp_path) == []
