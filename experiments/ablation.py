"""Do the lab's hand-written pieces earn their place? `compare` on one change at a time.

    python experiments/ablation.py dqn acrobot --seeds 100-104 --total-steps 8000
    python experiments/ablation.py ppo cartpole --seeds 100-104 --total-steps 20000

For ALGO on TASK this writes one preset file per variant (the task's preset plus one change)
and runs `python -m rl_lab.run compare ALGO@base,ALGO@VARIANT,... TASK`, so every variant is
a normal run directory and the report carries compare's statistics (IQM with stratified
bootstrap CIs, probability of improvement). The variants:
- `base`: the lab as shipped (FlatAdam, numpy acting);
- `adam-foreach`, `adam-fused`: torch.optim.Adam with its multi-tensor or fused kernels
  instead of FlatAdam (`--optimizer`);
- `torch-acting`: actions from the torch network instead of its numpy twin
  (`--no-numpy-acting`).
The design question is speed, so read `steps_per_second` (training time only); the learning
metrics should not move (the variants compute the same arithmetic, up to float rounding).
Runs go to --out (default /tmp/rl_lab-ablation/ALGO-TASK); report.md, report.json and
curves.png are copied to experiments/results/ablation/ALGO-TASK/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from rl_lab.run import main as rl_lab_main

RESULTS = Path(__file__).parent / "results" / "ablation"
VARIANTS = {
    "base": {},
    "adam-foreach": {"optimizer": "foreach"},
    "adam-fused": {"optimizer": "fused"},
    "torch-acting": {"numpy_acting": False},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algo", choices=("dqn", "ppo"))
    parser.add_argument("task")
    parser.add_argument("--seeds", default="100-104")
    parser.add_argument("--total-steps", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path("/tmp/rl_lab-ablation") / f"{args.algo}-{args.task}"
    presets = out / "presets"
    entries = []
    for name, change in VARIANTS.items():
        # compare labels an ALGO@FILE entry by the file's folder: presets/NAME/preset.json.
        path = presets / name / "preset.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"algo": change, "source": f"ablation: {name}"}) + "\n")
        entries.append(f"{args.algo}@{path}")
    command = ["compare", ",".join(entries), args.task, "--seeds", args.seeds]
    command += ["--workers", str(args.workers), "--out", str(out)]
    if args.total_steps:
        command += ["--total-steps", str(args.total_steps)]
    status = rl_lab_main(command)
    if status == 0:
        target = RESULTS / f"{args.algo}-{args.task}"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("report.md", "report.json", "curves.png"):
            shutil.copy2(out / name, target / name)
        print(f"copied the report to {target}")
    return status


if __name__ == "__main__":
    sys.exit(main())
