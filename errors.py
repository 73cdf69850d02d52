"""What the scripts share at the command line: the error type for mistakes a user can fix, how it is
reported, and help that shows every default."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (missing data, bad files): shown as a message, never a traceback."""


def reports_user_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a script's ``main`` so a ``UserError`` prints ``error: ...`` and exits with status 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1

    return wrapper


class ShowDefaults(argparse.RawDescriptionHelpFormatter):
    """``--help`` with every option's default, unless its help already says it (descriptions keep
    their own line breaks)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"
