"""Atomic checkpoints: tensors and arrays in safetensors, everything else in JSON.

A checkpoint is a directory `checkpoints/step_000001000/` with `tensors.safetensors` and
`state.json`; `checkpoints/latest` names the newest one. Each is written under a temporary
name and renamed, so a run killed mid-save still has its previous checkpoint intact.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rl_lab.errors import UserError

# JSON stand-ins for what JSON cannot hold directly.
TENSOR, ARRAY, ITEMS, TUPLE = "__tensor__", "__ndarray__", "__items__", "__tuple__"


def _encode(value, path: str, tensors: dict[str, torch.Tensor]):
    """Replace tensors/arrays by references into `tensors`; keep non-str dict keys."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {TENSOR: path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(value))
        return {ARRAY: path}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {key: _encode(item, f"{path}.{key}", tensors) for key, item in value.items()}
        return {
            ITEMS: [
                [key, _encode(item, f"{path}.{i}", tensors)]
                for i, (key, item) in enumerate(value.items())
            ]
        }
    if isinstance(value, tuple):
        return {TUPLE: [_encode(item, f"{path}.{i}", tensors) for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(item, f"{path}.{i}", tensors) for i, item in enumerate(value)]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def _decode(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, dict):
        if TENSOR in value:
            return tensors[value[TENSOR]]
        if ARRAY in value:
            return tensors[value[ARRAY]].numpy()
        if ITEMS in value:
            return {key: _decode(item, tensors) for key, item in value[ITEMS]}
        if TUPLE in value:
            return tuple(_decode(item, tensors) for item in value[TUPLE])
        return {key: _decode(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file under a temporary name in the same directory, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def save(directory: Path, state: dict, keep: int = 2) -> Path:
    """Save `state` as checkpoints/step_N; keep the newest `keep` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    step = int(state["run"]["env_steps"])
    final = directory / f"step_{step:012d}"
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".tmp_"))
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, "s", tensors)
    save_file(tensors, str(tmp / "tensors.safetensors"))
    (tmp / "state.json").write_text(json.dumps(encoded))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(directory / "latest", final.name + "\n")
    for old in sorted(directory.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(directory: Path) -> dict:
    """Load the newest checkpoint; a missing or corrupt one is a UserError."""
    pointer = directory / "latest"
    if not pointer.is_file():
        raise UserError(
            f"no checkpoint in {directory}: pass a run directory that has "
            "checkpoints/ (start a new run instead if it never saved one)"
        )
    path = directory / pointer.read_text().strip()
    try:
        tensors = load_file(str(path / "tensors.safetensors"))
        encoded = json.loads((path / "state.json").read_text())
        return _decode(encoded, tensors)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(
            f"checkpoint {path} is unreadable ({type(error).__name__}): "
            "start a new run or restore the run directory"
        ) from None
    except Exception as error:  # safetensors raises its own error types on corrupt files
        raise UserError(
            f"checkpoint {path} is corrupt ({type(error).__name__}): "
            "start a new run or restore the run directory"
        ) from None
