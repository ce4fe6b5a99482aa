"""Many runs on a Ray cluster (`--ray-address` of `compare` and `tune`): one Ray task per job.

Ray is an optional extra (`pip install -e ".[ray]"`); without it the flag is a one-line error.
The jobs are the same functions the local worker processes run, so results do not depend on
where they ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rl_lab.errors import UserError


def require_ray():
    try:
        import ray
    except ImportError:
        raise UserError(
            '--ray-address needs Ray: pip install -e ".[ray]" (or pip install "ray[default]")'
        ) from None
    return ray


def connect(address: str):
    """Join the cluster at `address` ('auto', HOST:PORT or ray://...), or say why not."""
    ray = require_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UserError(
                f"cannot reach a Ray cluster at {address!r} ({first_line}): start one with "
                "`ray start --head`, or leave out --ray-address to run here"
            ) from None
    return ray


def run_remote(
    job: Callable, arguments: Sequence[tuple], address: str, cpus_per_task: float
) -> list:
    """job(*args) for each args as a Ray task needing `cpus_per_task` CPUs; results in order."""
    ray = connect(address)
    remote = ray.remote(num_cpus=cpus_per_task, max_retries=0)(job)
    return ray.get([remote.remote(*args) for args in arguments])
