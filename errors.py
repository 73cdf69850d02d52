"""The one exception type for mistakes a user can fix, and how scripts report it."""

from __future__ import annotations

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
