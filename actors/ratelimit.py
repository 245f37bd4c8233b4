"""Rate-limited logging: a failure that repeats on every request is logged once per interval.

A full disk makes every ``recommend`` fail to record its decision; a corrupt
entry fails every read of it. Logging each occurrence (with a traceback)
buries everything else and costs more than the request. :class:`RateLimitedLog`
logs the first occurrence of each *key* at once, then at most one line per
``interval_s`` for that key, saying how many were suppressed in between.

Expected operational failures (:class:`OSError`, the project's own errors)
are logged as one line with the error's message; anything else keeps its
traceback, because it is a bug.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from actors.errors import MatchlightError

DEFAULT_INTERVAL_S: Final = 60.0
#: Keys remembered at most; beyond it the oldest are forgotten (memory stays bounded).
MAX_KEYS: Final = 1024


def is_expected(exc: BaseException) -> bool:
    """Whether ``exc`` is an operational failure (disk, I/O, our own errors), not a bug."""
    return isinstance(exc, OSError | MatchlightError)


class RateLimitedLog:
    """Log through ``logger`` at most once per ``interval_s`` per key, counting the rest.

    Not thread-safe across threads that log the same key at the same moment:
    at worst a line more or a count off by one. ``clock`` is for tests.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        #: key -> (when it was last logged, occurrences suppressed since).
        self._state: dict[str, tuple[float, int]] = {}
        self.total = 0

    def log(
        self,
        level: int,
        key: str,
        message: str,
        *args: Any,
        exc: BaseException | None = None,
    ) -> bool:
        """Log ``message % args`` now unless ``key`` was logged within the interval.

        With ``exc``, its message is appended; its traceback too unless it is
        an expected operational failure (:func:`is_expected`). Returns whether
        a line was written.
        """
        self.total += 1
        now = self._clock()
        last = self._state.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._state[key] = (last[0], last[1] + 1)
            return False
        suppressed = 0 if last is None else last[1]
        if len(self._state) >= MAX_KEYS and key not in self._state:
            self._state.pop(next(iter(self._state)))
        self._state[key] = (now, 0)
        text = message % args if args else message
        if exc is not None:
            text = f"{text}: {exc}" if str(exc) else f"{text}: {type(exc).__name__}"
        if suppressed:
            text = f"{text} ({suppressed} more like this in the last {self.interval_s:g} s)"
        exc_info = exc if exc is not None and not is_expected(exc) else None
        self.logger.log(level, "%s", text, exc_info=exc_info)
        return True

    def error(self, key: str, message: str, *args: Any, exc: BaseException | None = None) -> bool:
        return self.log(logging.ERROR, key, message, *args, exc=exc)

    def warning(self, key: str, message: str, *args: Any, exc: BaseException | None = None) -> bool:
        return self.log(logging.WARNING, key, message, *args, exc=exc)
