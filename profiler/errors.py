"""The errors entry points turn into exit codes: bad input 2, no solution 1."""


class InputError(ValueError):
    """Bad input from a user: a file, a flag, a value. The message names what and where."""


class NoSolution(RuntimeError):
    """A search found nothing within its limits (say, a solver's time limit): exit code 1."""
