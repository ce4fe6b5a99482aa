"""Tuned defaults per (algorithm, task): the bare command should solve the task.

Each algorithm module keeps its own `PRESETS = {task: {"run": {...}, "algo": {...}}}` next
to its update rule; "run" sets RunConfig fields, "algo" the algorithm's config fields, and
flags given on the command line override both. Measured results are in README.md.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

from rl_lab.errors import UserError
from rl_lab.registry import ALGOS, closest


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


PRESET_FILE_KEYS = ("run", "algo", "source")  # "source": where a tuned preset came from


def read_preset_file(path: str, run_cls: type, algo_cls: type) -> dict[str, dict]:
    """A preset from a JSON file ({"run": {...}, "algo": {...}}, as `tune` writes it), each
    value type-checked against its config field; a bad file is one UserError line."""
    try:
        values = json.loads(Path(path).read_text())
    except OSError as error:
        raise UserError(f"cannot read --preset-file {path} ({error.strerror})") from None
    except ValueError as error:
        raise UserError(f"--preset-file {path} is not JSON ({error})") from None
    unknown = sorted(set(values) - set(PRESET_FILE_KEYS)) if isinstance(values, dict) else None
    if unknown != []:
        raise UserError(
            f'--preset-file {path} must be a JSON object of "run" and "algo" settings'
            + (f"; unknown keys {unknown}" if unknown else "")
        )
    return {
        part: typed_settings(values.get(part, {}), cls, f"{path} [{part!r}]")
        for part, cls in (("run", run_cls), ("algo", algo_cls))
    }


def typed_settings(values, cls: type, where: str) -> dict:
    """Config values from JSON, each checked against its field's type (lists become tuples)."""
    if not isinstance(values, dict):
        raise UserError(f"{where} must be an object of settings, got {values!r}")
    fields = {spec.name: spec.type for spec in dataclasses.fields(cls)}
    settings = {}
    for name, value in values.items():
        if name not in fields:
            raise UserError(
                f"{where} has an unknown setting {name!r}{closest(name, fields)}: "
                f"`python -m rl_lab.run ALGO TASK --help` lists them"
            )
        kind = {"int": int, "float": float, "bool": bool, "str": str, "tuple": tuple}.get(
            fields[name], fields[name]
        )
        ok = {
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            bool: isinstance(value, bool),
            str: isinstance(value, str),
            tuple: isinstance(value, list)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
        }.get(kind, True)
        if not ok:
            raise UserError(f"{where}: {name} must be a {kind.__name__}, got {value!r}")
        settings[name] = tuple(value) if kind is tuple else float(value) if kind is float else value
    return settings
