"""What a finished run leaves for people: curve.png and summary.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rl_lab.checkpoint import atomic_write_text


def write_curve(path: Path, rows: list[dict], title: str, solved_at: float | None) -> None:
    """Episode returns (faint), their rolling mean, and the evaluations, against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = [
        (r["step"], r["charts/episodic_return"]) for r in rows if "charts/episodic_return" in r
    ]
    evals = [(r["step"], r["eval/mean_return"]) for r in rows if "eval/mean_return" in r]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if episodes:
        steps, returns = map(np.asarray, zip(*episodes))
        ax.plot(steps, returns, color="tab:blue", alpha=0.25, linewidth=0.8, label="episode return")
        window = max(1, min(100, len(returns) // 10))
        rolling = np.convolve(returns, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], rolling, color="tab:blue", label=f"mean of {window}")
    if evals:
        steps, means = zip(*evals)
        ax.plot(steps, means, "o-", color="tab:orange", label="greedy evaluation")
    if solved_at is not None:
        ax.axhline(solved_at, color="gray", linestyle="--", linewidth=1, label="solved")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)


def write_summary(path: Path, title: str, report: dict, config: dict) -> None:
    atomic_write_text(path, summary_text(title, report, config))


def summary_text(title: str, report: dict, config: dict) -> str:
    """summary.md of a Gym run: the final evaluation, first solve, counts, time split, config."""
    timers = report.get("timers", {})
    total = sum(timers.values()) or 1.0
    lines = [
        f"# {title}",
        "",
        f"- final greedy evaluation: **{report['mean_return']:.2f} ± {report['std_return']:.2f}** "
        f"over {report['episodes']} episodes (min {report['min_return']:.1f}, "
        f"max {report['max_return']:.1f})",
        f"- solved threshold: {report['solved_at']} → solved: {report['solved']}",
        f"- first evaluation at or above the threshold: step {report['first_solved_step']} "
        f"({_seconds(report['first_solved_seconds'])}, evaluation time excluded)",
        f"- best evaluation during training: {report['best_eval']}",
        f"- {report['env_steps']:,} env steps, {report['updates']:,} updates, "
        f"{report['wall_seconds']:.1f} s wall, stopped: {report['stop_reason']}",
        "- time split: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in timers.items()),
        "",
        "Files: `config.json` (repeat the run), `metrics.jsonl`, `tensorboard/`, `checkpoints/`, "
        "`eval.json`, `curve.png`.",
        "",
        "![learning curve](curve.png)",
        "",
        "## Config",
        "",
        "```json",
        __import__("json").dumps(config, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.1f} s"
