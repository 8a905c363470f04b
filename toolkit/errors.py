"""User-facing errors: entry points print them as one clear line and exit non-zero, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input (a path, a key, a value) that they can fix."""


def cli_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap an entry point's main(): a UserError becomes `error: ...` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: the last complete checkpoint is kept; resume with --resume_from_checkpoint latest",
                  file=sys.stderr)
            return 130

    return wrapper
