"""The errors entry points turn into exit codes: bad input 2, no solution 1; and what the
commands share: an argument parser whose usage errors are InputErrors too, and the run of a
subcommand that turns errors into those codes with one line on stderr."""

import argparse
import os
import sys
from typing import Callable


class InputError(ValueError):
    """Bad input from a user: a file, a flag, a value. The message names what and where."""


class NoSolution(RuntimeError):
    """A search found nothing within its limits (say, a solver's time limit): exit code 1."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message to one line, as an InputError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message}")


def run_command(prog: str, parser: argparse.ArgumentParser, handlers: dict[str, Callable[[argparse.Namespace], int]],
                argv: list[str] | None) -> int:
    try:
        args = parser.parse_args(argv)
        return handlers[args.command](args)
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except NoSolution as err:
        print(f"{prog}: no solution: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # a handler may say what was left undone
        print(f"{prog}: interrupted" + (f": {err}" if str(err) else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (`sim predict --json | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
