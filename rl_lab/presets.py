"""Tuned defaults per (algorithm, task): the bare command should solve the task.

Each algorithm module keeps its own `PRESETS = {task: {"run": {...}, "algo": {...}}}` next
to its update rule; "run" sets RunConfig fields, "algo" the algorithm's config fields, and
flags given on the command line override both. Measured results are in README.md.
"""

from __future__ import annotations

import importlib

from rl_lab.registry import ALGOS


def all_presets() -> dict[tuple[str, str], dict[str, dict]]:
    found = {}
    for spec in ALGOS.values():
        for module_name in spec.modules.values():
            module = importlib.import_module(module_name)
            for task, values in getattr(module, "PRESETS", {}).items():
                found[(spec.name, task)] = values
    return found


def preset(algo: str, task: str, kind: str = "gym") -> dict[str, dict]:
    """The preset for this pair, or empty overrides (config defaults) if there is none."""
    module = importlib.import_module(ALGOS[algo].modules[kind])
    found = getattr(module, "PRESETS", {}).get(task, {})
    return {"run": dict(found.get("run", {})), "algo": dict(found.get("algo", {}))}
