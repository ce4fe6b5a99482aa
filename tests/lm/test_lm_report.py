"""What users see of an LM run: held-out evaluations on the dashboard, and curve.png."""

from __future__ import annotations

import io

from rich.console import Console

from rl_lab.dashboard import Dashboard
from rl_lab.lm.experiment import LMEvaluator
from rl_lab.loop import RunContext
from rl_lab.report import write_lm_curve

START = {"mean_reward": -0.5, "positive_fraction": 0.25, "kl": 0.0}
LATER = {"mean_reward": 1.5, "positive_fraction": 0.75, "kl": 2.0}


def test_dashboard_shows_the_held_out_evaluation(tmp_path):
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    board = Dashboard(live=False, console=console, unit="completions")
    run = RunContext(None, 64, 8, 0, tmp_path, title="ppo · sentiment")
    evaluator = LMEvaluator(lambda: None, 0, None, board)

    evaluator.show(run, START, at_start=True)
    assert run.last_eval == run.best_eval == -0.5
    assert board.eval_rows["held-out positive"] == "0.25 → 0.25"

    run.env_steps = 32
    evaluator.show(run, LATER)
    assert run.last_eval == run.best_eval == 1.5
    assert board.eval_rows["held-out positive"] == "0.25 → 0.75"
    assert board.eval_rows["held-out reward"] == "-0.50 → 1.50"
    assert board.eval_rows["held-out KL"] == "2.00"
    frame = Console(file=io.StringIO(), width=160, record=True)
    frame.print(board.render(run))
    text = frame.export_text()
    assert "held-out positive" in text and "0.25 → 0.75" in text and "last eval" in text


def test_lm_curve_draws_reward_band_kl_and_held_out_points(tmp_path):
    rows = []
    for step in (8, 16, 24):
        rows += [{"step": step, "charts/episodic_return": r} for r in (step / 8 - 1, step / 8)]
        rows.append({"step": step, "charts/kl": step / 10, "charts/mean_reward": step / 8})
    rows.append({"step": 16, "eval/mean_return": 1.0, **{f"eval/{k}": v for k, v in LATER.items()}})
    path = tmp_path / "curve.png"
    write_lm_curve(path, rows, "ppo · sentiment", START, LATER)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
