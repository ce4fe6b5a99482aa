"""The dashboard renders what the issue asks for, live and as plain lines."""

import io

from rich.console import Console

from rl_lab.dashboard import Dashboard, curve_rows
from rl_lab.loop import RunContext


def fake_run():
    run = RunContext(agent=None, total_steps=10_000, num_envs=1, seed=0, title="dqn · cartpole")
    run.env_steps, run.episodes, run.best_eval, run.last_eval = 5_000, 40, 312.5, 300.0
    run.latest.update(
        {
            "charts/epsilon": 0.25,
            "losses/td_loss": 0.5,
            "losses/q_values": 12.0,
            "time/sps": 9000.0,
            "time/ups": 2000.0,
        }
    )
    run.timers.update(act=1.0, learn=3.0, eval=1.0)
    return run


def test_live_render_shows_the_signals():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    board = Dashboard(live=True, console=console)
    run = fake_run()
    board.on_train_start(run)
    for value in range(50):
        board.on_episode_end(run, float(value), 10)
    board.on_step(run)
    board.on_train_end(run)
    text = out.getvalue()
    for word in (
        "mean return (100)",
        "best eval",
        "312.50",
        "epsilon",
        "td loss",
        "q values",
        "env steps/s",
        "updates/s",
        "ETA",
        "elapsed",
        "time split",
        "learn 60.0%",
        "5,000/10,000",
    ):
        assert word in text, word
    assert "█" in text  # the return curve


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    board = Dashboard(console=Console(file=out, width=100), plain_seconds=0.0)
    assert board.live_mode is False
    run = fake_run()
    board.on_train_start(run)
    board.on_episode_end(run, 42.0, 42)
    board.on_log(run, run.latest)
    line = out.getvalue().splitlines()[-1]
    assert "5,000/10,000 steps" in line and "return 42.00" in line and "ETA" in line


def test_curve_rows_scale_between_min_and_max():
    rows = curve_rows([0.0, 1.0], width=2, height=2)
    assert rows == [" █", " █"]
