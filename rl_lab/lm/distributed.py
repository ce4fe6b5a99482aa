"""The processes of an `accelerate launch` as the LM side needs them (one when run plainly).

accelerate starts the processes and sets up torch.distributed (gloo on CPU, NCCL on GPUs);
these helpers name the few collective steps an LM run takes: agree on the run directory,
sum statistics so that every process sees the same numbers, gather evaluation rows, wait.
With one process each is a no-op, so a plain `python -m rl_lab.run` computes exactly what it
did before multi-process support.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import torch

from rl_lab.errors import UserError


def launched() -> bool:
    """Whether this process is one of several started together (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def state():
    """accelerate's process state (created on first use: it joins the launch's process group)."""
    from accelerate import PartialState

    check_launch()
    # accelerate's torchrun launcher (--multi_gpu, or the configs in experiments/accelerate/)
    # on a machine without GPUs leaves each process alone unless told to use the CPU: then
    # the processes join one group over gloo.
    return PartialState(cpu=launched() and not torch.accelerator.is_available())


def check_launch() -> None:
    """A one-line error for `accelerate launch --cpu --num_processes N`: without mpirun that
    starts a single process (MASTER_ADDR set, no WORLD_SIZE), which would train alone."""
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    if use_cpu and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ:
        raise UserError(
            "accelerate launch --cpu starts one process, not --num_processes of them (on CPUs "
            "it needs mpirun): use `accelerate launch --config_file "
            "experiments/accelerate/cpu.yaml --num_processes N -m rl_lab.run ...`"
        )


def world() -> int:
    """How many processes train together."""
    return state().num_processes


def rank() -> int:
    return state().process_index


def is_main() -> bool:
    """The process that writes files, logs and draws the dashboard."""
    return state().is_main_process


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all processes (a new tensor; the input is kept)."""
    if world() == 1:
        return tensor
    total = tensor.detach().clone()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    return total


def gather(rows: list) -> list:
    """Every process's `rows`, concatenated in process order (the same list on every process)."""
    if world() == 1:
        return list(rows)
    from accelerate.utils import gather_object

    return list(gather_object(list(rows)))


def broadcast(value: Any) -> Any:
    """The main process's `value` (picklable), on every process."""
    if world() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def wait() -> None:
    """Block until every process gets here."""
    if world() > 1:
        state().wait_for_everyone()


def close() -> None:
    """Wait until every process is done; the process group stays up until exit_process.

    Destroying the gloo group here would leave its last reference with DDP's reducer, and
    freeing the agent then joins gloo's worker thread while holding the GIL, which that
    thread may need to free the barrier's tensor: a deadlock (1 launch in 6 of
    tests/lm/equivalence.py hung here; none of 44 since).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def exit_process(status: int) -> NoReturn:
    """End the process with `status`. A process of a multi-process launch skips the
    interpreter's teardown: gloo's worker threads may still hold tensors then, and freeing them
    once Python is shutting down aborts the process ("terminate called without an active
    exception", SIGABRT) after a run that succeeded, which fails the whole launch. Every file
    the run writes is closed by then; only the standard streams need flushing."""
    if launched():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def shard(items: list, index: int | None = None, count: int | None = None) -> list:
    """This process's share of `items`: every count-th item from its rank on."""
    index = rank() if index is None else index
    count = world() if count is None else count
    return items[index::count]
