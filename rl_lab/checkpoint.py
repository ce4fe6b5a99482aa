"""Atomic checkpoints: tensors and arrays in safetensors, everything else in JSON.

A checkpoint is a directory `checkpoints/step_000001000/` with `tensors.safetensors` and
`state.json`; `checkpoints/latest` names the newest one. Each is written under a temporary
name and renamed, so a run killed mid-save still has its previous checkpoint intact.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rl_lab.errors import DISK_FULL, RunFault, UserError

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
    """Write a file under a temporary name in the same directory, then rename it into place.

    If the write fails (a full disk, say) the temporary file is removed and the old file,
    if any, is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_fault(run_dir: Path, error: OSError, what: str) -> RunFault:
    """The one line for a write that failed mid-run (a full disk): what is kept, what to do."""
    kept = latest_step(Path(run_dir) / "checkpoints")
    kept_text = (
        "no checkpoint was complete yet"
        if kept is None
        else f"the last complete checkpoint (step {kept:,}) is kept"
    )
    return RunFault(
        f"cannot write {what} ({error.strerror or error}): {kept_text}; free some disk "
        f"space, then continue with `python -m rl_lab.run --resume {run_dir}`",
        DISK_FULL,
    )


def all_finite(state) -> bool:
    """Whether every floating-point torch tensor in `state` (parameters, optimizer moments)
    is finite; numpy arrays (replay data) are the environment's business and not checked."""
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(all_finite(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return all(all_finite(value) for value in state)
    return True


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' save_file, with its I/O failures (a full disk) raised as OSError."""
    try:
        save_file(tensors, str(path))
    except SafetensorError as error:
        code = re.search(r"os error (\d+)", str(error))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


def save(directory: Path, state: dict, keep: int = 2) -> Path:
    """Save `state` as checkpoints/step_N; keep the newest `keep` checkpoints.

    A run is deterministic, so a checkpoint of a step already on disk (the end of training
    right after a periodic save, say) holds the same state and is not rewritten: replacing
    it would leave a moment with no complete checkpoint. A failed write (full disk) removes
    its temporary directory and raises RunFault; the previous checkpoint stays intact.
    """
    step = int(state["run"]["env_steps"])
    final = directory / f"step_{step:012d}"
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not final.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".tmp_"))
            tensors: dict[str, torch.Tensor] = {}
            encoded = _encode(state, "s", tensors)
            save_tensors(tensors, tmp / "tensors.safetensors")
            (tmp / "state.json").write_text(json.dumps(encoded))
            os.replace(tmp, final)
            tmp = None
        atomic_write_text(directory / "latest", final.name + "\n")
    except OSError as error:
        raise write_fault(directory.parent, error, f"a checkpoint in {directory}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(directory.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial_saves(directory: Path) -> None:
    """Delete what a save that was killed left behind (call with the run's lock held)."""
    for tmp in directory.glob(".tmp_*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for tmp in directory.glob(".latest.*"):  # atomic_write_text's temporary file
        tmp.unlink(missing_ok=True)


def latest_step(directory: Path) -> int | None:
    """The step of the newest complete checkpoint, or None if there is none."""
    path = newest(directory)
    return None if path is None else int(path.name[len("step_") :])


def newest(directory: Path) -> Path | None:
    """The checkpoint `latest` names; if a kill left it naming a removed one, the newest
    complete step_* directory (they appear by rename, so each one found is complete)."""
    pointer = directory / "latest"
    if pointer.is_file():
        path = directory / pointer.read_text().strip()
        if path.is_dir():
            return path
    found = sorted(directory.glob("step_*")) if directory.is_dir() else []
    return found[-1] if found else None


def load(directory: Path) -> dict:
    """Load the newest checkpoint; a missing or corrupt one is a UserError."""
    for attempt in range(3):  # a live run may rotate the checkpoint away while we read it
        path = newest(directory)
        if path is None:
            raise UserError(
                f"no checkpoint in {directory}: pass a run directory that has "
                "checkpoints/ (start a new run instead if it never saved one)"
            )
        try:
            tensors = load_file(str(path / "tensors.safetensors"))
            encoded = json.loads((path / "state.json").read_text())
            return _decode(encoded, tensors)
        except FileNotFoundError:
            if path.is_dir() or attempt == 2:
                raise UserError(
                    f"checkpoint {path} is incomplete: start a new run or restore the run directory"
                ) from None
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
    raise AssertionError("unreachable")
