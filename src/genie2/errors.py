"""The one exception for input a user can fix: a bad argument, option, file or message."""


class InputError(ValueError, TypeError):
    """Something a user passed cannot work; the message says what was wrong and how to fix it.
    It is a ValueError and a TypeError, so code catching either (as before it existed) still does.
    The `genie2` command prints it as one line (exit code 2); any other exception is a bug and
    keeps its traceback."""
