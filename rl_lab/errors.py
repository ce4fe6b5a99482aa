"""The one exception type for user mistakes.

`python -m rl_lab.run` turns a UserError into one line on stderr and exit status 2;
any other exception is our bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: the message says what is wrong and what to do."""


class RunFault(Exception):
    """A fault that ended a run (a loss turned NaN, the disk filled up): `python -m rl_lab.run`
    prints the one-line message and exits with `status`; the last good checkpoint is kept."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


DIVERGED, DISK_FULL = 3, 4  # exit statuses of RunFault (2 is a user mistake)
