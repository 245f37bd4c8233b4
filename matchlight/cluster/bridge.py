"""Run asyncio code (the nats-py client) on one dedicated thread, awaited from Trio.

nats-py only runs on asyncio; the server runs on Trio. One asyncio loop on a
daemon thread owns the NATS connection, and a Trio task awaits a coroutine
there with :meth:`AsyncioThread.run`: one crossing per call (each call
should carry a batch), no Trio worker thread blocked meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class AsyncioThread:
    """An asyncio event loop on its own daemon thread, for the life of a ``with`` block."""

    def __init__(self, name: str = "nats") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> AsyncioThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop from any thread; its future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, factory: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Await ``factory(*args)`` on the loop from Trio. Cancelling the Trio task cancels it."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        future = self.submit(factory(*args))

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()
