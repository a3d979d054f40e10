"""What every command shares: a user mistake ends with its message and exit status 1, not a
traceback."""
from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from mixbench.errors import MixbenchError

log = logging.getLogger("mixbench")


def exit_on_user_error(body: Callable) -> Callable:
    @functools.wraps(body)
    def wrapper(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except MixbenchError as err:  # a user mistake: say what to do, no traceback
            log.error("error: %s", err)
            sys.exit(1)
    return wrapper
