"""The one error type a user's bad input raises; entry points turn it into exit code 2."""


class InputError(ValueError):
    """Bad input from a user: a file, a flag, a value. The message names what and where."""
