"""The one exception type for user mistakes.

`python -m rl_lab.run` turns a UserError into one line on stderr and exit status 2;
any other exception is our bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: the message says what is wrong and what to do."""
