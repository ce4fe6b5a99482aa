"""Search spaces for `python -m rl_lab.run tune`, declared beside each config's fields.

A field that is worth tuning carries `search=Range(...)` or `search=Choice(...)` in its
metadata (see rl_lab/algos/dqn.py), so the ranges live next to the default and the help text
instead of in a second list that drifts away from the config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """A number between low and high (inclusive); log=True samples its logarithm uniformly.
    Integer fields get integers."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of a few values (ints, floats, strings or bools)."""

    values: tuple

    def __init__(self, *values):
        object.__setattr__(self, "values", tuple(values))


def search_space(config_cls: type) -> dict[str, Range | Choice]:
    """{field name: its search space} for every field of the config that declares one."""
    return {
        spec.name: spec.metadata["search"]
        for spec in dataclasses.fields(config_cls)
        if "search" in spec.metadata
    }


def suggest(trial, config_cls: type) -> dict[str, Any]:
    """Settings for one Optuna trial: a value drawn for each field of the search space."""
    types = {spec.name: spec.type for spec in dataclasses.fields(config_cls)}
    values = {}
    for name, space in search_space(config_cls).items():
        if isinstance(space, Choice):
            values[name] = trial.suggest_categorical(name, list(space.values))
        elif types[name] in ("int", int):
            values[name] = trial.suggest_int(name, int(space.low), int(space.high), log=space.log)
        else:
            values[name] = trial.suggest_float(name, space.low, space.high, log=space.log)
    return values
