"""The one exception type that means "the user gave us something wrong".

The CLI prints it as a single line (no traceback); library callers can catch it.
"""


class UserError(Exception):
    """Bad input from the user: a file, flag or value. The message names it."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
