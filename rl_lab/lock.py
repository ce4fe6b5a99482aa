"""One process per run directory: an OS lock on `RUN_DIR/.lock`.

`fcntl.flock` locks belong to the open file, so the kernel releases them when the process
ends however it ends (SIGKILL included): a killed run can be resumed at once, while a second
process on a live run is refused before it writes anything.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from rl_lab.errors import UserError

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # run dir -> open descriptor, kept for the life of the process


def lock_run_dir(run_dir: Path) -> None:
    """Hold the run directory's lock until this process exits; UserError if another has it."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held or int(os.environ.get("RANK", "0")) != 0:
        return  # under a multi-process launch the main process holds it for the run
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise UserError(
            f"{run_dir} is in use by process {holder} (it holds {LOCK_FILE}): wait for it "
            "to finish or stop it, then try again"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[run_dir] = fd


def unlock_run_dir(run_dir: Path) -> None:
    """Release the lock early (tests running several experiments in one process)."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)
