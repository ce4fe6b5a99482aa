"""A tampered LM run directory (config.json or checkpoint) is one line and exit 2 for both
`--resume` and `eval`, and nothing in the directory changes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from rl_lab.run import main
from tests.cli_helpers import files_under
from tests.lm.test_lm_ppo import SMALL
from tests.lm.tiny import save_tiny_policy


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    policy = save_tiny_policy(tmp_path_factory.mktemp("tiny-policy"))
    run_dir = tmp_path_factory.mktemp("lm") / "run"
    argv = ["ppo", "sentiment", "--policy", str(policy), "--total-steps", "2"]
    assert main([*argv, "--checkpoint-interval", "1", "--run-dir", str(run_dir), *SMALL]) == 0
    return run_dir


@pytest.fixture
def run_copy(lm_run, tmp_path):
    return shutil.copytree(lm_run, tmp_path / "copy")


def assert_refused(argv, capsys, *words):
    capsys.readouterr()
    assert main([str(arg) for arg in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]


def assert_refused_both_ways(run_dir, capsys, *words):
    before = files_under(run_dir)
    assert_refused(["--resume", run_dir, "--no-dashboard"], capsys, *words)
    assert_refused(["eval", run_dir, "--episodes", "2"], capsys, *words)
    assert files_under(run_dir) == before


def test_lm_config_value_of_the_wrong_type(run_copy, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    config["algo_config"]["max_new_tokens"] = "6"
    (run_copy / "config.json").write_text(json.dumps(config))
    assert_refused_both_ways(run_copy, capsys, "config.json", "--max-new-tokens must be an integer")


def test_lm_config_that_is_not_json(run_copy, capsys):
    (run_copy / "config.json").write_text("{")
    assert_refused_both_ways(run_copy, capsys, "config.json", "not JSON")


def test_lm_checkpoint_tensor_of_the_wrong_shape(run_copy, capsys):
    latest = (run_copy / "checkpoints" / "latest").read_text().strip()
    path = run_copy / "checkpoints" / latest / "tensors.safetensors"
    tensors = load_file(str(path))
    name = next(key for key in sorted(tensors) if key.endswith("weight"))
    tensors[name] = torch.zeros(3, 5)
    save_file(tensors, str(path))
    assert_refused_both_ways(run_copy, capsys, "checkpoint", "has shape (3, 5)")


def test_lm_resume_below_the_iterations_done(run_copy, capsys):
    before = files_under(run_copy)
    argv = ["--resume", run_copy, "--total-steps", "1", "--no-dashboard"]
    assert_refused(argv, capsys, "--total-steps 1 is below the 2 iterations")
    assert files_under(run_copy) == before
