"""A reader worker's projections, following a log that another process writes.

In a node run as several worker processes (``matchlight serve --workers N``),
one process owns the write path and appends to the LMDB log; every reader
process keeps its own actors, index and signals as projections of that log.
:class:`LogFollower` moves them along: it reads the events committed after
what it has applied, in pages, and applies them through the actor system
as the writer's own commits are dispatched in a single-process node (so both
build the same state, and the actors' ``seq`` check makes a delivery that
overlaps a recovery harmless); a reader applies each page at once, on the
follower's task (:meth:`actors.system.ActorSystem._apply_followed`).

Read-your-writes across processes: a read calls :meth:`LogFollower.catch_up`
first, which waits until everything stored when the read arrived is applied.
A write acknowledged before the read was sent was committed before then, so
the read sees it. The follower also applies new events without a read asking:
at once when :meth:`LogFollower.nudge` is called (a reader worker's writer rings
after each commit: see :mod:`matchlight.server.commit_bell`), and every
``poll_s`` in any case, so a read usually finds nothing left to apply. It
applies at most ``page`` events between two checkpoints, so reads that need
nothing more are answered between pages rather than after a whole burst.

Reads first: a reader worker marks the reads it answers (:meth:`LogFollower.reading`),
and before each page the follower lets the reads in progress finish (for at most
``reads_first_s``, so that it keeps up under any load). A page blocks the event
loop while it is applied (a commit of 100 events took about 3 ms of a reader's CPU
beside the bench's load); without this a read waited for one whenever one was
being applied, and for one more at each of its own checkpoints, since the
follower took a page whenever the event loop went round. (Smaller pages while
reads come, 32 events, did not lower the p99 and cost more per event.)

Frozen once applied: with ``freeze_applied`` (a reader worker), the follower moves
everything the process holds out of the cyclic garbage collector's generations
after each page (``gc.freeze()`` splices three lists: 5 to 7 µs with 4.5 million
objects tracked).
A page's new objects are projections that live as long as the process and hold
no cycles, but the collector kept walking them: beside the bench's paced ingest
a reader's young-generation collections took 15 to 80 ms, growing with its heap,
and its older generations' 150 to 700 ms, all of it time the event loop answered
nothing. After each page the collector's counts start again from nothing, so it
runs only when reads themselves leave 50,000 containers alive between two pages.
What a freeze catches that later becomes cyclic garbage is never collected: a
test checks that following leaves none. In the two readers of a node that had
followed 300,000 events and answered reads, unfreezing and collecting found 769
and 721 such objects, nearly all the command line's parser (caught by the start's
own freeze) and a few exceptions' tracebacks.

``on_progress``, if set, is told the applied ``seq`` after every page and every
time the follower wakes, so at least every ``poll_s`` while it runs (a reader
worker posts it where the writer can see how far behind it is: see
:mod:`matchlight.server.apply_board`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Final

import attrs
import trio

from actors.errors import CodecError
from actors.events import StoredEvent
from actors.store import EventStore
from actors.writer import Completion

log = logging.getLogger(__name__)

#: Events applied between two checkpoints, at most.
DEFAULT_PAGE: Final = 128
#: How long the follower lets the reads in progress finish before its next page, at most.
READS_FIRST_S: Final = 0.002
#: How often an idle follower looks for new events unless nudged, seconds.
DEFAULT_POLL_S: Final = 0.002

Dispatch = Callable[[Sequence[StoredEvent]], Awaitable[Completion]]


@attrs.frozen(kw_only=True)
class FollowerStatistics:
    #: The last ``seq`` applied to this process's projections.
    applied_seq: int
    #: Events applied since this process started following.
    events: int
    #: Reads that waited for events to be applied first.
    catch_ups: int
    #: How long those reads waited, in all, seconds.
    catch_up_wait_s: float
    #: Events left out because they could not be decoded (the store counts them too).
    left_out: int


class LogFollower:
    """Applies ``store``'s events after ``start`` through ``dispatch``. Run :meth:`run`
    in a nursery; call :meth:`catch_up` before every read."""

    def __init__(
        self,
        store: EventStore,
        dispatch: Dispatch,
        *,
        start: int,
        page: int = DEFAULT_PAGE,
        reads_first_s: float = READS_FIRST_S,
        poll_s: float = DEFAULT_POLL_S,
        freeze_applied: bool = False,
    ) -> None:
        self._store = store
        self._freeze_applied = freeze_applied
        self._dispatch = dispatch
        self._page = page
        self._reads_first_s = reads_first_s
        self._poll_s = poll_s
        #: Reads being answered; those of them waiting in :meth:`catch_up`; set when no read
        #: is being answered (but those waiting).
        self._reads = 0
        self._reads_waiting = 0
        self._reads_done = trio.Event()
        #: Everything up to here is applied.
        self.applied = start
        self._advanced = trio.Event()
        self._wake = trio.Event()
        self._events = 0
        self._catch_ups = 0
        self._catch_up_wait_s = 0.0
        self._left_out = 0
        #: Told the applied ``seq`` after every page and every wake (see the module docstring).
        self.on_progress: Callable[[int], None] | None = None

    async def catch_up(self) -> None:
        """Return once every event stored now is applied. A checkpoint only if it waits.

        Raises:
            StoreError: the store cannot be read.
        """
        target = self._store.head()
        if self.applied >= target:
            return
        self._catch_ups += 1
        self._wake.set()
        began = trio.current_time()
        self._reads_waiting += 1  # the follower must not wait for this read: it waits for it
        self._check_reads_done()
        try:
            while self.applied < target:
                await self._advanced.wait()
        finally:
            self._reads_waiting -= 1
            self._catch_up_wait_s += trio.current_time() - began

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Mark a read being answered: the follower lets it finish before its next page."""
        self._reads += 1
        try:
            yield
        finally:
            self._reads -= 1
            self._check_reads_done()

    def _check_reads_done(self) -> None:
        if self._reads <= self._reads_waiting:
            self._reads_done.set()

    async def _let_reads_finish(self) -> None:
        """Wait until no read is being answered, for at most ``reads_first_s``. A checkpoint."""
        if self._reads <= self._reads_waiting:
            await trio.lowlevel.checkpoint()
            return
        self._reads_done = trio.Event()
        with trio.move_on_after(self._reads_first_s):
            await self._reads_done.wait()

    def nudge(self) -> None:
        """Look for new events now (the log has grown)."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the log until cancelled."""
        task_status.started()
        while True:
            with trio.move_on_after(self._poll_s):
                await self._wake.wait()
            self._wake = trio.Event()
            self._progress()
            await self._let_reads_finish()
            while await self._apply_page():
                self._progress()
                await self._let_reads_finish()

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.applied)

    async def _apply_page(self) -> bool:
        """Apply the next page of events, if any; whether there was one."""
        before = self.applied
        page = self._read_page()
        if not page:
            if self.applied != before:  # corrupt events were left out
                self._advanced.set()
                self._advanced = trio.Event()
            return False
        completion = await self._dispatch(page)
        if not completion.done:  # (a reader's pages are applied at once: no checkpoint then)
            await completion.wait()
        self._events += len(page)
        if self._freeze_applied:
            gc.freeze()  # the page's projections are long-lived: see the module docstring
        self.applied = page[-1].seq
        self._advanced.set()
        self._advanced = trio.Event()
        return True

    def _read_page(self) -> list[StoredEvent]:
        """The next events after :attr:`applied`, leaving out (and logging) one that is corrupt."""
        try:
            return self._store.read_all(after=self.applied, limit=self._page)
        except CodecError:
            pass
        # Somewhere in this page is an event that does not decode: read one at a time.
        for _ in range(self._page):
            try:
                return self._store.read_all(after=self.applied, limit=1)
            except CodecError as exc:
                self._left_out += 1
                self.applied += 1  # sequence numbers are consecutive
                log.error("follower: event %d left out: %s", self.applied, exc)
        return []

    def statistics(self) -> FollowerStatistics:
        return FollowerStatistics(
            applied_seq=self.applied,
            events=self._events,
            catch_ups=self._catch_ups,
            catch_up_wait_s=self._catch_up_wait_s,
            left_out=self._left_out,
        )
