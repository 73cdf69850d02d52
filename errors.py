"""What the scripts share at the command line: the error type for mistakes a user can fix, how it is
reported, and help that shows every default."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (missing data, bad files): shown as a message, never a traceback."""

    exit_status = 1


class RunBusy(UserError):
    """The run's folder is held by another process that is running it: nothing was done. Its own exit
    status (EX_TEMPFAIL) lets a job script tell "someone else runs this" from a failure."""

    exit_status = 75


def reports_user_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a script's ``main`` so a ``UserError`` prints ``error: ...`` and exits with its status (1, or
    75 for ``RunBusy``)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return error.exit_status

    return wrapper


class ShowDefaults(argparse.RawDescriptionHelpFormatter):
    """``--help`` with every option's default, unless its help already says it (descriptions keep
    their own line breaks)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"
