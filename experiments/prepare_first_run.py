"""Time the sentiment task's asset preparation from an empty cache, as a first run does it.

    python experiments/prepare_first_run.py [--cache DIR]

Runs `python -m rl_lab.lm.setup` (the same `prepare` a first `ppo sentiment` runs) into an empty
RL_LAB_CACHE and prints its wall time, its CPU time (what an idle machine's wall time is bounded
by: CPU seconds / cores), the load average around it, and the reward model's card. Saves them to
experiments/results/prepare_first_run.json. The asset packages are taken as installed (pip's
download time is not ours to measure).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "prepare_first_run.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="an empty directory to prepare into (default: a temp dir)")
    args = parser.parse_args()
    cache = Path(args.cache or tempfile.mkdtemp(prefix="rl_lab-cache-"))
    if cache.exists() and any(cache.iterdir()):
        sys.exit(f"{cache} is not empty: pass an empty --cache")
    env = {**os.environ, "RL_LAB_CACHE": str(cache)}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    status = subprocess.run([sys.executable, "-m", "rl_lab.lm.setup"], env=env).returncode
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    card = json.loads((cache / "reward-minilm-sentiment" / "card.json").read_text())
    result = {
        "status": status,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "cores": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "reward_model": card,
    }
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
