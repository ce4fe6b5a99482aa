"""Running the CLI the way a user does: a subprocess of `python -m rl_lab.run`."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None, timeout=300, **popen):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "rl_lab.run", *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **popen,
    )


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*")) if Path(path).exists() else []
