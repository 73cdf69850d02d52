"""What the scripts share at the command line: the error type for mistakes a user can fix, how it is
reported, help that shows every default, and the checks of numbers given as flags."""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import math
import os
import signal
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (missing data, bad files): shown as a message, never a traceback."""

    exit_status = 1


class RunBusy(UserError):
    """The run's folder is held by another process that is running it: nothing was done. Its own exit
    status (EX_TEMPFAIL) lets a job script tell "someone else runs this" from a failure."""

    exit_status = 75


# What to do when a file cannot be written, by errno: the part of the message after the path.
WAY_OUT = {
    errno.EISDIR: "is a folder, where a file is written: move or remove it, then run again",
    errno.ENOTDIR: "has a file where a folder is needed on its path: move or remove it, then run again",
    errno.EEXIST: "is a file, where a folder is needed: move or remove it, then run again",
    errno.EACCES: "is not open to this user (permission denied): choose a folder you can write, or fix its permissions",
    errno.EPERM: "is not open to this user (operation not permitted): choose another folder",
    errno.EROFS: "is on a read-only file system: choose a folder on a writable one",
    errno.ENOSPC: "cannot be written: the disk is full. Free some space, then run again",
    errno.EDQUOT: "cannot be written: the disk quota is used up. Free some space, then run again",
}


def drop_stdout() -> None:
    """Send what is left of stdout to /dev/null, once its pipe is closed: Python's last flush at exit would
    otherwise fail on it again and print a warning."""
    with contextlib.suppress(OSError, ValueError):  # not a real file (tests): nothing to do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def reports_user_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a script's ``main`` so a ``UserError`` prints ``error: ...`` and exits with its status (1, or
    75 for ``RunBusy``); a file that cannot be written (a folder in its place, a read-only or full disk)
    is named with the way out, exit 1; a closed output (``| head``) ends the script quietly, exit 141
    as for SIGPIPE. One mechanism for every script, so none of them shows a traceback for these."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            status = main(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here at the latest, not in Python's flush at exit
            return status
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return error.exit_status
        except BrokenPipeError:
            drop_stdout()
            return 128 + signal.SIGPIPE
        except OSError as error:
            if error.errno not in WAY_OUT or not error.filename:
                raise
            # os.replace names the temporary first and the target second: the target is the user's file.
            path = error.filename2 or error.filename
            print(f"error: {path} {WAY_OUT[error.errno]}.", file=sys.stderr)
            return 1

    return wrapper


class Parser(argparse.ArgumentParser):
    """Every script's parser: help that shows each default (``ShowDefaults``), and no abbreviated options. A
    prefix is refused, so that --se cannot pass a check for --seed, nor -w one for -wr: ``allow_abbrev=False``
    covers the long options only, and argparse still matches a prefix of a single-dash one."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", ShowDefaults)
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def _get_option_tuples(self, option_string: str) -> list:
        # Only the exact short option with its value attached (-e2) stays: no prefix of another option.
        return [found for found in super()._get_option_tuples(option_string) if found[1] == option_string[:2]]


class ShowDefaults(argparse.RawDescriptionHelpFormatter):
    """``--help`` with every option's default, unless its help already says it (descriptions keep
    their own line breaks)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def int_at_least(minimum: int, maximum: int | None = None):
    """An integer from ``minimum`` (up to ``maximum``), as a flag's ``type``: a message naming the bound otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def number_in(low: float, high: float = math.inf, low_included: bool = True):
    """A finite number from ``low`` (or just above it) up to ``high``."""
    bounds = f"{'at least' if low_included else 'above'} {low:g}"
    bounds += f" and at most {high:g}" if high < math.inf else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not low_included) or value > high:
            raise argparse.ArgumentTypeError(f"must be a number {bounds}, got {text}")
        return value

    return parse
