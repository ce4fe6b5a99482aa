"""Each user mistake: one line on stderr, exit status 2, no traceback, nothing written."""

import json
import os

import pytest
import torch

from tests.cli_helpers import cli, files_under


def assert_user_error(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, words",
    [
        (["dqm", "cartpole"], ["unknown algorithm 'dqm'", "did you mean 'dqn'"]),
        (["dqn", "cartpol"], ["unknown task 'cartpol'", "did you mean 'cartpole'"]),
        (["dqn", "NoSuchEnv-v9"], ["unknown Gymnasium id"]),
        (["dqn"], ["missing TASK"]),
        (["dqn", "cartpole", "--lr", "-1"], ["--lr must be at least 0"]),
        (["dqn", "cartpole", "--total-steps", "-5"], ["--total-steps must be at least 1"]),
        (["dqn", "cartpole", "--batch-size", "lots"], ["--batch-size", "invalid int value"]),
        (["dqn", "cartpole", "--gamma", "1.5"], ["--gamma must be at most 1"]),
        (["dqn", "cartpole", "--hidden", "64,x"], ["--hidden"]),
        (["dqn", "cartpole", "--bogus-flag", "1"], ["unrecognized arguments"]),
        (["dqn", "pendulum"], ["discrete action space", "use ppo"]),
        (["eval", "does/not/exist"], ["not a run directory"]),
        (["eval", "does/not/exist", "--seed", "-1"], ["--seed must be at least 0"]),
        (["--resume", "does/not/exist"], ["not a run directory"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, words, tmp_path):
    result = (
        cli(*args, "--run-dir", tmp_path / "run")
        if args[0] not in ("eval", "--resume")
        else cli(*args)
    )
    assert_user_error(result, *words)
    assert files_under(tmp_path) == []  # nothing half-written
    assert not (tmp_path / "run").exists()


def test_unwritable_run_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        result = cli("dqn", "cartpole", "--run-dir", locked / "run")
        assert_user_error(result, "cannot write the run directory")
    finally:
        locked.chmod(0o700)


def test_run_dir_that_is_a_file(tmp_path):
    target = tmp_path / "afile"
    target.write_text("x")
    result = cli("dqn", "cartpole", "--run-dir", target / "run")
    assert_user_error(result, "cannot write the run directory")


def test_existing_run_is_not_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    result = cli("dqn", "cartpole", "--run-dir", run_dir)
    assert_user_error(result, "already holds a run", "--resume")
    assert (run_dir / "config.json").read_text() == "{}"


def make_run(tmp_path):
    run_dir = tmp_path / "run"
    result = cli(
        "dqn",
        "cartpole",
        "--total-steps",
        "300",
        "--checkpoint-interval",
        "100",
        "--eval-episodes",
        "1",
        "--no-dashboard",
        "--run-dir",
        run_dir,
    )
    assert result.returncode == 0, result.stderr
    return run_dir


def test_resume_of_corrupt_checkpoint(tmp_path):
    run_dir = make_run(tmp_path)
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    (run_dir / "checkpoints" / latest / "tensors.safetensors").write_bytes(b"garbage")
    before = files_under(run_dir)
    assert_user_error(cli("--resume", run_dir), "corrupt")
    assert_user_error(cli("eval", run_dir), "corrupt")
    assert files_under(run_dir) == before


def test_resume_of_corrupt_config(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "config.json").write_text("{not json")
    assert_user_error(cli("--resume", run_dir), "corrupt")


def test_eval_without_checkpoints(tmp_path):
    # (--resume of such a run trains it from step 0: tests/test_resume.py)
    run_dir = make_run(tmp_path)
    for path in sorted((run_dir / "checkpoints").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    assert_user_error(cli("eval", run_dir), "no checkpoint")


def test_resume_rejects_changed_hyperparameters(tmp_path):
    run_dir = make_run(tmp_path)
    assert_user_error(
        cli("dqn", "cartpole", "--resume", run_dir, "--lr", "0.1"), "saved config", "--lr"
    )
    assert json.loads((run_dir / "config.json").read_text())["algo_config"]["lr"] != 0.1


def test_unwritable_run_dir_even_for_root():
    result = cli("dqn", "cartpole", "--run-dir", "/proc/rl_lab_cannot_write_here/run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--run-dir" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, words",
    [
        (["dqn", "cartpole", "--lr", "nan"], ["--lr must be a finite number, got nan"]),
        (["dqn", "cartpole", "--gamma", "nan"], ["--gamma must be a finite number"]),
        (["dqn", "cartpole", "--lr", "1e400"], ["--lr must be a finite number, got inf"]),
        (["dqn", "cartpole", "--tau", "nan"], ["--tau must be a finite number"]),
        (["ppo", "cartpole", "--lr", "inf"], ["--lr must be a finite number"]),
        (["ppo", "cartpole", "--max-grad-norm", "nan"], ["--max-grad-norm must be a finite"]),
        (["ppo", "cartpole", "--clip-range=-inf"], ["--clip-range must be a finite number"]),
        (["ppo", "sentiment", "--lr", "0"], ["--lr must be above 0"]),
        (["grpo", "sentiment", "--beta", "nan"], ["--beta must be a finite number"]),
        (["rloo", "sentiment", "--clip-range", "inf"], ["--clip-range must be a finite"]),
        (["reward", "sentiment", "--warmup", "nan"], ["--warmup must be a finite number"]),
        (
            ["ppo", "cartpole", "--num-envs", "100000", "--total-steps", "1000"],
            ["--num-envs 100000 exceeds --total-steps 1000"],
        ),
        (["reward", "sentiment", "--total-steps", "5"], ["unrecognized arguments: --total-steps"]),
        (["reward", "sentiment", "--no-dashboard"], ["unrecognized arguments: --no-dashboard"]),
        (["reward", "sentiment", "--num-envs", "4"], ["unrecognized arguments: --num-envs"]),
    ],
)
def test_out_of_range_values_are_one_line(args, words, tmp_path):
    assert_user_error(cli(*args, "--run-dir", tmp_path / "run"), *words)
    assert files_under(tmp_path) == []


def test_help_after_algo_and_task_shows_the_preset():
    out = cli("dqn", "cartpole", "--help").stdout
    n_step = " ".join(out[out.index("  --n-step N_STEP") :].split()[:20])
    assert "default: 10 from the preset, 3 without it" in n_step, n_step
    assert "(default: 64,64)" in " ".join(out.split())  # --hidden, which the preset keeps


def test_reward_help_lists_only_what_applies():
    out = cli("reward", "sentiment", "--help").stdout
    assert "--steps" in out and "--seed" in out
    assert "--total-steps" not in out and "--no-dashboard" not in out


def edit_config(run_dir, edit):
    config = json.loads((run_dir / "config.json").read_text())
    edit(config)
    (run_dir / "config.json").write_text(json.dumps(config))


def assert_refused_both_ways(run_dir, *words):
    before = files_under(run_dir)
    assert_user_error(cli("--resume", run_dir), *words)
    assert_user_error(cli("eval", run_dir), *words)
    assert files_under(run_dir) == before


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("finished"))


@pytest.fixture
def run_copy(finished_run, tmp_path):
    import shutil

    return shutil.copytree(finished_run, tmp_path / "copy")


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda c: c["algo_config"].update(batch_size="64"), ["--batch-size must be an integer"]),
        (lambda c: c["algo_config"].update(lr=None), ["--lr must be a number"]),
        (lambda c: c["algo_config"].update(hidden="64,64"), ["--hidden"]),
        (lambda c: c["algo_config"].update(double=1), ["--double must be true or false"]),
        (lambda c: c["run"].update(seed=-3), ["--seed must be at least 0"]),
        (lambda c: c["run"].update(bogus=1), ["unknown config keys ['bogus']"]),
        (lambda c: c.update(run=[1, 2]), ["corrupt", "run"]),
        (lambda c: c.update(algo=7), ["corrupt", "algo"]),
    ],
)
def test_tampered_config_is_one_line(run_copy, edit, words):
    edit_config(run_copy, edit)
    assert_refused_both_ways(run_copy, "config.json", *words)


def test_config_that_is_not_json_is_one_line(run_copy):
    (run_copy / "config.json").write_text('{"algo": "dqn", ')
    assert_refused_both_ways(run_copy, "config.json", "corrupt", "not JSON")


def tamper_tensors(run_dir, change):
    from safetensors.torch import load_file, save_file

    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    path = run_dir / "checkpoints" / latest / "tensors.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


def test_checkpoint_tensor_of_the_wrong_shape_is_one_line(run_copy):
    def widen_first_layer(tensors):
        name = next(k for k in sorted(tensors) if "q_net" in k and k.endswith("weight"))
        tensors[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] + 1)

    tamper_tensors(run_copy, widen_first_layer)
    assert_refused_both_ways(run_copy, "checkpoint", "has shape", "does not fit")


def test_checkpoint_missing_key_is_one_line(run_copy):
    latest = (run_copy / "checkpoints" / "latest").read_text().strip()
    state_path = run_copy / "checkpoints" / latest / "state.json"
    state = json.loads(state_path.read_text())
    del state["agent"]["target_net"]
    state_path.write_text(json.dumps(state))
    assert_refused_both_ways(run_copy, "checkpoint", "missing keys ['target_net']")


def test_checkpoint_counter_of_the_wrong_type_is_one_line(run_copy):
    latest = (run_copy / "checkpoints" / "latest").read_text().strip()
    state_path = run_copy / "checkpoints" / latest / "state.json"
    state = json.loads(state_path.read_text())
    state["run"]["env_steps"] = "lots"
    state_path.write_text(json.dumps(state))
    assert_refused_both_ways(run_copy, "checkpoint", "run.env_steps should be a number")


def test_resume_below_the_steps_done_is_one_line(run_copy):
    before = files_under(run_copy)
    assert_user_error(
        cli("--resume", run_copy, "--total-steps", "100"),
        "--total-steps 100 is below the 300 steps",
    )
    assert files_under(run_copy) == before


def test_validate_allows_inf_only_where_the_field_says_so():
    from dataclasses import dataclass

    from rl_lab.config import option, validate

    @dataclass
    class Limits:
        horizon: float = option(float("inf"), "steps to look ahead", min=1.0, allow_inf=True)
        rate: float = option(0.5, "a rate", above=0.0)

        def __post_init__(self):
            validate(self)

    assert Limits().horizon == float("inf")
    for bad, message in [
        ({"horizon": float("nan")}, "--horizon must be a finite number"),
        ({"horizon": float("-inf")}, "--horizon must be at least 1.0"),
        ({"rate": float("inf")}, "--rate must be a finite number"),
        ({"rate": 0.0}, "--rate must be above 0.0"),
        ({"rate": "0.5"}, "--rate must be a number"),
        ({"rate": True}, "--rate must be a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            Limits(**bad)
    assert Limits(rate=2).rate == 2  # an integer is a fine number (config.json writes 2.0 as 2.0)
