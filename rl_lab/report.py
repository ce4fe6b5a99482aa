"""What a finished run leaves for people: curve.png and summary.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rl_lab.checkpoint import atomic_write_text
from rl_lab.logging import logged


def save_figure(fig, path: Path, dpi: int | None = None) -> None:
    """Write a matplotlib figure as PNG under a temporary name, rename it into place, close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    tmp.replace(path)


def write_curve(path: Path, rows: list[dict], title: str, solved_at: float | None) -> None:
    """Episode returns (faint), their rolling mean, and the evaluations, against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = logged(rows, "charts/episodic_return")
    evals = logged(rows, "eval/mean_return")
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
    save_figure(fig, path)


def write_lm_curve(
    path: Path, rows: list[dict], title: str, before: dict, after: dict, unit: str = "completions"
) -> None:
    """An LM run: mean reward per iteration with a band (the middle half of its completions'
    rewards), KL to the reference below, and the held-out evaluations as points (start, during
    training, end), each labelled with its POSITIVE fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_step: dict[int, list[float]] = {}
    for row in rows:
        if "charts/episodic_return" in row:
            by_step.setdefault(row["step"], []).append(row["charts/episodic_return"])
    kl = logged(rows, "charts/kl")
    last = max([*by_step, *(s for s, _ in kl), 0])
    held_out = [(0, before)]
    held_out += [
        (r["step"], {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("eval/")})
        for r in rows
        if "eval/positive_fraction" in r
    ]
    held_out.append((last, after))

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 6.5), dpi=100, sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    if by_step:
        steps = np.array(sorted(by_step))
        rewards = [np.asarray(by_step[s]) for s in steps]
        low, high = (np.array([np.percentile(r, q) for r in rewards]) for q in (25, 75))
        top.fill_between(steps, low, high, color="tab:blue", alpha=0.2, label="middle half")
        mean = [r.mean() for r in rewards]
        top.plot(steps, mean, color="tab:blue", label="mean reward per iteration")
    eval_steps = [s for s, _ in held_out]
    top.plot(
        eval_steps,
        [m["mean_reward"] for _, m in held_out],
        "o",
        color="tab:orange",
        label="held-out mean reward (POSITIVE fraction)",
    )
    for step, m in held_out:
        top.annotate(
            f"{m['positive_fraction']:.2f}",
            (step, m["mean_reward"]),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=8,
            color="tab:orange",
        )
    top.set_ylabel("reward")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize=8)
    if kl:
        bottom.plot(*zip(*kl), color="tab:red", label="KL per completion (training)")
    bottom.plot(
        eval_steps, [m["kl"] for _, m in held_out], "o", color="tab:orange", label="held-out"
    )
    bottom.set_ylabel("KL to reference")
    bottom.set_xlabel(unit)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="best", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


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
