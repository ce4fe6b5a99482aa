"""Final return by patience, read from runs that stopped after K solving evaluations in a row.

`python streaks.py OUT_DIR K` (OUT_DIR: a Gym `compare --out` directory; threshold 200, as
LunarLander's). For a stop after k < K solving evaluations, a run's proxy final return is the
periodic evaluation taken where the k-th would be (the one after its (k-1)-th solving evaluation
in a row), whether or not it reached 200; prints the IQM across seeds for each k and the real
final return (eval.json) at K.
"""

import json
import sys
from pathlib import Path

from scipy.stats import trim_mean

SOLVED = 200.0


def proxies(run: Path, patience: int) -> dict[int, float]:
    """{k: the evaluation where a stop after k solving evaluations would have been taken}."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [row["eval/mean_return"] for row in rows if "eval/mean_return" in row]
    found, streak = {}, 0
    for value, following in zip(evals, evals[1:]):
        streak = streak + 1 if value >= SOLVED else 0
        if 1 <= streak < patience and streak + 1 not in found:
            found[streak + 1] = following
    return found


def main(out: Path, patience: int) -> None:
    for impl in sorted(p for p in out.iterdir() if p.is_dir()):
        runs = [run for run in sorted(impl.glob("s*")) if (run / "eval.json").is_file()]
        finals = [json.loads((run / "eval.json").read_text())["mean_return"] for run in runs]
        by_k: dict[int, list[float]] = {}
        for run in runs:
            for k, value in proxies(run, patience).items():
                by_k.setdefault(k, []).append(value)
        print(f"{impl.name}: {len(runs)} runs")
        for k in sorted(by_k):
            print(f"  stop after {k}: IQM {trim_mean(by_k[k], 0.25):.1f} ({len(by_k[k])} runs)")
        print(f"  stop after {patience} (final return): IQM {trim_mean(finals, 0.25):.1f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
