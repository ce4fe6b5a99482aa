"""CartPole must be learned by the bare preset within its budget (a bounded learning test)."""

import json

import pytest

from rl_lab.run import main


@pytest.mark.slow
def test_dqn_cartpole_preset_solves(tmp_path):
    # The preset solves 4-5 of 5 seeds (README); demanding one of two keeps this test honest
    # without making it flaky on a machine whose floating point differs slightly.
    finals = []
    for seed in (0, 1):
        run_dir = tmp_path / f"s{seed}"
        assert (
            main(
                [
                    "dqn",
                    "cartpole",
                    "--seed",
                    str(seed),
                    "--no-dashboard",
                    "--run-dir",
                    str(run_dir),
                ]
            )
            == 0
        )
        report = json.loads((run_dir / "eval.json").read_text())
        finals.append(report["mean_return"])
        assert report["env_steps"] <= 50_000
        if report["mean_return"] >= 475:
            break
    assert max(finals) >= 475, finals
