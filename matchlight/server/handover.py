"""How a node's public connections reach its readers: the supervisor accepts, and hands each
connection to the reader with the fewest open.

With ``--workers N`` the supervisor listens on the public address itself. Each
reader gets one end of a unix ``SOCK_SEQPACKET`` pair, its *hand-over channel*:
the supervisor sends an accepted connection's descriptor down it (``SCM_RIGHTS``),
and the reader sends one byte back each time a connection it was handed closes.
So the supervisor knows how many connections each reader holds and gives the
next one to the reader with the fewest (the lowest-numbered on a tie).

Why not let the kernel spread connections (``SO_REUSEPORT``, or readers
accepting from one shared socket)? It spreads them by a hash of the addresses,
or to whichever reader wakes first, so two clients can share one reader while
the other idles. With two recommend clients and two readers, one of two runs of
the end-to-end bench served 565 calls/s at p99 7.7 ms instead of 974 calls/s
at p99 4.9 ms.

While no reader is ready (all are restarting) the supervisor accepts nothing,
and new connections wait in the listening socket's backlog. A reader that dies
drops the connections it held; its clients reconnect and are handed to the
readers that are up.

:class:`HandOver` is the supervisor's half, :class:`HandedListener` a reader's.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Final, final

import attrs
import trio

log = logging.getLogger(__name__)

#: What the supervisor sends with a descriptor, and a reader sends when one closes.
HANDED: Final = b"c"
CLOSED: Final = b"-"


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A hand-over channel: the supervisor's end, the reader's end (to be inherited)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    return ours, theirs


@attrs.define(eq=False)
class _Reader:
    name: str
    #: The supervisor's end of the reader's channel; ``None`` while the reader is not up.
    channel: socket.socket | None = None
    #: Connections handed to it and not yet closed.
    open: int = 0


class HandOver:
    """The supervisor's half: accepts public connections and hands each to a reader.

    Call :meth:`attach` when a reader is ready (with the supervisor's end of its
    channel) and run :meth:`run` in a nursery.
    """

    def __init__(self, listening: socket.socket, readers: Sequence[str]) -> None:
        self._listening = trio.socket.from_stdlib_socket(listening)
        self._readers = {name: _Reader(name) for name in readers}
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope()
        #: Set while some reader is up.
        self._some_ready = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and hand over until :meth:`stop` (or cancelled)."""
        with self._scope:
            await self._serve(task_status)

    def stop(self) -> None:
        """Accept no more connections (those handed over stay with their readers)."""
        self._scope.cancel()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._some_ready.wait()  # until then, leave them in the backlog
                connection, _ = await self._listening.accept()
                with connection:
                    await self._hand(connection.fileno())

    def attach(self, name: str, channel: socket.socket) -> None:
        """Reader ``name`` is ready; ``channel`` is the supervisor's end of its channel.

        Closes the channel of its previous process, if any. Call while :meth:`run` runs.
        """
        assert self._nursery is not None, "attach() needs run() running"
        reader = self._readers[name]
        self._detach(reader)
        reader.channel, reader.open = channel, 0
        self._nursery.start_soon(self._count_closes, reader, channel)
        self._some_ready.set()

    async def _hand(self, fd: int) -> None:
        """Send ``fd`` to the ready reader with the fewest open connections (one that turns
        out to be gone is skipped); wait while none is ready."""
        while True:
            ready = [r for r in self._readers.values() if r.channel is not None]
            if not ready:
                await self._some_ready.wait()
                continue
            reader = min(ready, key=lambda r: r.open)
            channel = reader.channel
            assert channel is not None
            try:
                await _send_fd(channel, fd)
            except (OSError, trio.ClosedResourceError) as exc:  # it died (or is restarting)
                log.info("hand-over: %s is gone (%s); trying another reader", reader.name, exc)
                self._detach(reader)
                continue
            reader.open += 1
            return

    async def _count_closes(self, reader: _Reader, channel: socket.socket) -> None:
        """Count the reader's closed connections until its channel ends (the process died)."""
        while reader.channel is channel:
            try:
                await trio.lowlevel.wait_readable(channel)
            except trio.ClosedResourceError:  # detached: a new process took its place
                return
            try:
                data = channel.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                if reader.channel is channel:
                    self._detach(reader)
                return
            reader.open = max(0, reader.open - data.count(CLOSED))

    def _detach(self, reader: _Reader) -> None:
        if reader.channel is not None:
            trio.lowlevel.notify_closing(reader.channel)
            reader.channel.close()
        reader.channel, reader.open = None, 0
        if self._some_ready.is_set() and all(r.channel is None for r in self._readers.values()):
            self._some_ready = trio.Event()


async def _send_fd(channel: socket.socket, fd: int) -> None:
    while True:
        try:
            socket.send_fds(channel, [HANDED], [fd])
            return
        except BlockingIOError:
            await trio.lowlevel.wait_writable(channel)


@final
class HandedStream(trio.abc.HalfCloseableStream):
    """A connection a reader was handed: a socket stream that tells the supervisor when it
    closes (once)."""

    def __init__(self, stream: trio.SocketStream, closed: Callable[[], None]) -> None:
        self.stream = stream
        self._closed: Callable[[], None] | None = closed

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            closed, self._closed = self._closed, None
            if closed is not None:
                closed()


@final
class HandedListener(trio.abc.Listener[HandedStream]):
    """A reader's half: the connections the supervisor hands it over ``channel`` (the
    reader's inherited end of its hand-over channel)."""

    def __init__(self, channel: socket.socket) -> None:
        channel.setblocking(False)
        self._channel = channel

    async def accept(self) -> HandedStream:
        while True:
            await trio.lowlevel.wait_readable(self._channel)
            try:
                _, fds, _, _ = socket.recv_fds(self._channel, 16, 1)
            except BlockingIOError:
                continue
            if not fds:  # the supervisor is gone: this process exits with it
                await trio.sleep_forever()
            sock = socket.socket(fileno=fds[0])
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            return HandedStream(stream, self._report_closed)

    def _report_closed(self) -> None:
        with contextlib.suppress(OSError):  # full, or the supervisor is gone: it only balances
            self._channel.send(CLOSED)

    async def aclose(self) -> None:
        trio.lowlevel.notify_closing(self._channel)
        self._channel.close()
        await trio.lowlevel.checkpoint()
