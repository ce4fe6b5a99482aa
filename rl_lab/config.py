"""Config dataclasses: one per algorithm, plus the run settings every algorithm shares.

Every field carries its help text in `metadata["help"]`; the CLI turns each field into a
flag (`batch_size` -> `--batch-size`). Validation lives in `__post_init__` and raises
ValueError with a message that says what to change.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


def option(default: Any, help: str, **checks) -> Any:
    """A config field with its --help text and checks: min=, max= (inclusive), above= (strict
    lower bound), choices=, allow_inf=True (float fields that may be infinite)."""
    kwargs = (
        {"default_factory": lambda: default}
        if isinstance(default, (list, tuple))
        else {"default": default}
    )
    return field(metadata={"help": help, **checks}, **kwargs)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


# Python types of the annotations configs use (`from __future__ import annotations` makes
# them strings). A JSON number without a fraction is a fine float; a bool is never a number.
FIELD_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "tuple": tuple}
TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    tuple: "a list of integers",
}
INT64_MAX = 2**63 - 1  # numpy and torch counters overflow beyond it


def check_type(flag: str, kind: str, value: Any) -> None:
    """Raise ValueError unless `value` is a `kind` ("int", "float", ...) as config.json or
    Python callers could hand it in (the CLI parser already converts flags)."""
    expected = FIELD_TYPES.get(kind if isinstance(kind, str) else kind.__name__)
    if expected is None:
        raise TypeError(f"{flag}: config fields must be int, float, str, bool or tuple")
    ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is tuple:
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ValueError(f"{flag} must be {TYPE_WORDS[expected]}, got {value!r}")


def validate(config: Any) -> None:
    """Check every field of a config: its type, a finite float (unless allow_inf=True), ints
    that fit in 64 bits, and the field's min=/max=/above=/choices= checks. The one place field
    values are checked; raises ValueError naming the flag."""
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        flag = flag_name(spec.name)
        check_type(flag, spec.type, value)
        meta = spec.metadata
        if isinstance(value, float) and not math.isfinite(value):
            if math.isnan(value) or not meta.get("allow_inf", False):
                raise ValueError(f"{flag} must be a finite number, got {value}")
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, int) and abs(v) > INT64_MAX for v in numbers):
            raise ValueError(f"{flag} is too large, got {value}")
        low, high, above = meta.get("min"), meta.get("max"), meta.get("above")
        choices = meta.get("choices")
        if low is not None and value < low:
            raise ValueError(f"{flag} must be at least {low}, got {value}")
        if above is not None and value <= above:
            raise ValueError(f"{flag} must be above {above}, got {value}")
        if high is not None and value > high:
            raise ValueError(f"{flag} must be at most {high}, got {value}")
        if choices is not None and value not in choices:
            raise ValueError(f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")
        if isinstance(value, tuple) and any(v <= 0 for v in value):
            raise ValueError(f"{flag} needs positive sizes, got {','.join(map(str, value))}")


@dataclass
class RunConfig:
    """Settings of a run, shared by every algorithm."""

    seed: int = option(0, "random seed: the same seed on the same machine repeats the run", min=0)
    total_steps: int = option(
        50_000,
        "training budget in env steps (text tasks: PPO iterations, GRPO/RLOO optimizer steps)",
        min=1,
    )
    num_envs: int = option(
        1,
        "environments stepped together (text tasks: PPO prompts per rollout, GRPO/RLOO "
        "completions per step)",
        min=1,
    )
    eval_episodes: int = option(20, "episodes of each greedy evaluation", min=1)
    eval_interval: int = option(
        5_000,
        "env steps (text tasks: iterations or steps) between evaluations during training "
        "(0: only at the end)",
        min=0,
    )
    stop_when_solved: bool = option(
        False, "stop training once evaluations reach the task's solved threshold (Gym tasks)"
    )
    solved_patience: int = option(
        1,
        "with --stop-when-solved: consecutive solving evaluations "
        "needed to stop (more guards against a lucky evaluation)",
        min=1,
    )
    checkpoint_interval: int = option(
        10_000, "env steps (text tasks: PPO iterations) between checkpoints", min=1
    )
    log_interval: int = option(
        1_000, "env steps (text tasks: PPO iterations) between metric log lines", min=1
    )

    def __post_init__(self):
        validate(self)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls: type, values: dict) -> Any:
    """Rebuild a config from config.json: tuples restored, unknown keys and values of the
    wrong type rejected (ValueError)."""
    if not isinstance(values, dict):
        raise ValueError(f"expected an object of settings, got {type(values).__name__}")
    known = {spec.name: spec for spec in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    fixed = {
        name: tuple(value) if isinstance(value, list) else value for name, value in values.items()
    }
    return cls(**fixed)
