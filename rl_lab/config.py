"""Config dataclasses: one per algorithm, plus the run settings every algorithm shares.

Every field carries its help text in `metadata["help"]`; the CLI turns each field into a
flag (`batch_size` -> `--batch-size`). Validation lives in `__post_init__` and raises
ValueError with a message that says what to change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def option(default: Any, help: str, **checks) -> Any:
    """A config field with its --help text and simple checks (min=, choices=)."""
    kwargs = (
        {"default_factory": lambda: default}
        if isinstance(default, (list, tuple))
        else {"default": default}
    )
    return field(metadata={"help": help, **checks}, **kwargs)


def validate(config: Any) -> None:
    """Apply each field's min=/max=/choices= checks; raise ValueError naming the flag."""
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        flag = "--" + spec.name.replace("_", "-")
        low, high = spec.metadata.get("min"), spec.metadata.get("max")
        choices = spec.metadata.get("choices")
        if low is not None and value < low:
            raise ValueError(f"{flag} must be at least {low}, got {value}")
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
    """Rebuild a config from config.json, tuples restored, unknown keys rejected."""
    known = {spec.name: spec for spec in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    fixed = {
        name: tuple(value) if isinstance(value, list) else value for name, value in values.items()
    }
    return cls(**fixed)
