"""Text tasks under `accelerate launch` with 2 CPU processes (gloo) on a tiny model: one run
directory, results, resume; and one update in 2 processes equals the same update in 1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("trl")

from rl_lab.run import main  # noqa: E402
from tests.cli_helpers import ROOT  # noqa: E402
from tests.lm.tiny import save_tiny_policy, tiny_llama, tiny_tokenizer  # noqa: E402

CPU_CONFIG = ROOT / "experiments" / "accelerate" / "cpu.yaml"


def free_port() -> int:
    """A port for the processes' rendezvous (29500, the default, may be taken by another run)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(*args, processes: int = 2, cwd=None) -> subprocess.CompletedProcess:
    """`accelerate launch` with the shipped CPU config, as a user types it."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CPU_CONFIG]
    command += ["--num_processes", processes, "--main_process_port", free_port(), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    try:
        return subprocess.run(
            list(map(str, command)),
            cwd=cwd or ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired as hung:  # a deadlock: show what the processes printed
        # On a timeout subprocess may hand back raw bytes (or None), whatever text= said.
        printed = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else part or ""
            for part in (hung.stdout, hung.stderr)
        )
        pytest.fail(f"the launch did not end in 300 s; it printed:\n{printed[-3000:]}")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return save_tiny_policy(tmp_path_factory.mktemp("tiny-policy"))


def small(policy_dir, run_dir, *extra):
    return [
        "--policy",
        policy_dir,
        "--reward",
        "vader",
        "--num-envs",
        "8",
        "--eval-episodes",
        "6",
        "--max-new-tokens",
        "6",
        "--threads",
        "1",
        "--total-steps",
        "2",
        "--run-dir",
        run_dir,
        "--no-dashboard",
        *extra,
    ]


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_two_processes_leave_one_run_directory(algo, policy_dir, tmp_path):
    runs = tmp_path / "runs"
    run_dir = runs / "run"
    extra = ["--mini-batch-size", "4"] if algo == "ppo" else ["--num-generations", "4"]
    done = launch("-m", "rl_lab.run", algo, "sentiment", *small(policy_dir, run_dir, *extra))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert [p.name for p in runs.iterdir()] == ["run"]
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["processes"] == 2 and report["after"]["prompts"] == 6
    assert report["completions"] == 16
    assert (run_dir / "model" / "config.json").is_file()
    assert output.count("held-out positive fraction") == 1  # the main process reports
    if algo != "ppo":
        return
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted({row["step"] for row in rows if "charts/kl" in row}) == [4, 8]
    # The same number of processes continues the run; another number is refused in one line.
    done = launch("-m", "rl_lab.run", "--resume", run_dir, "--total-steps", "3", "--no-dashboard")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert json.loads((run_dir / "eval.json").read_text())["iterations"] == 3


def test_resume_with_another_number_of_processes_is_refused(policy_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = small(policy_dir, run_dir, "--mini-batch-size", "4", "--total-steps", "1")
    assert main(["ppo", "sentiment", *map(str, args)]) == 0
    state = json.loads((run_dir / "config.json").read_text())
    assert state["algo"] == "ppo"
    done = launch("-m", "rl_lab.run", "--resume", run_dir, "--total-steps", "2")
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0
    assert any("trained with 1 process(es), this launch has 2" in line for line in lines)
    # accelerate's launcher reports the failed processes with a traceback of its own; none
    # comes from the lab's code.
    assert "rl_lab/" not in done.stdout + done.stderr


def test_one_update_in_two_processes_equals_one_process(tmp_path):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "tests.lm.equivalence", str(one)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    done = launch("-m", "tests.lm.equivalence", two)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    a, b = torch.load(one), torch.load(two)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=0), name
    # The update did something: weights moved from the start, the KL coefficient adapted.
    start = dict(tiny_llama(tiny_tokenizer()).named_parameters())
    assert not torch.allclose(a["pretrained.model.norm.weight"], start["model.norm.weight"])
    assert a["kl_coef"] != 0.2


def test_accelerate_cpu_flag_that_starts_one_process_is_refused(
    policy_dir, tmp_path, capsys, monkeypatch
):
    # What `accelerate launch --cpu --num_processes 2` leaves a single process it starts.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    run_dir = tmp_path / "run"
    assert main(["ppo", "sentiment", *map(str, small(policy_dir, run_dir))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "experiments/accelerate/cpu.yaml" in err
    assert not run_dir.exists()
