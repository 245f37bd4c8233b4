"""Resources that close: a ``with`` block for anything with a ``close()`` method."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """Mixin: ``with Resource(...) as r:`` closes ``r`` however the block ends.

    The class defines ``close()``; it must be idempotent, because a caller may
    also close explicitly inside the block.
    """

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
