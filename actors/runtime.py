"""The virtual-actor runtime: entities of one kind multiplexed onto a few shard tasks.

An *entity* (an actor identity such as ``("user", "u42")``) exists virtually:
it is activated on its first message by recovering its state from durable
storage, handles its messages one at a time in arrival order, and is
passivated (dropped from memory, after a snapshot if it changed) when idle
for ``passivate_after_s`` or when its shard holds more than
``max_active_per_shard`` entities. So millions of users cost only their
durable state plus the recently active ones.

Entities are spread over ``shards`` Trio tasks by a stable hash of their id;
each shard has a bounded mailbox. One message (an *envelope*) may carry work
for many entities of a shard, so a batch of 1,000 events is routed in one
pass rather than 1,000 round trips.

Supervision: if recovering or handling raises for an entity, the error is
logged (once a minute per entity and error, with a traceback only for a
bug, not for a known failure such as a corrupt record), that entity's
in-memory state is discarded (it is restarted from its durable state on
its next message) and the caller of an ``ask`` gets an
:class:`~actors.errors.ActorError`. Other entities, in the same shard or not,
are unaffected.

What an entity does is a :class:`Behavior`; the runtime knows nothing of
users or items.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

import attrs
import trio

from actors.errors import ActorError, MailboxFullError, SystemClosedError
from actors.ratelimit import RateLimitedLog, is_expected
from actors.store import Snapshot
from actors.writer import Completion

log = logging.getLogger(__name__)


class Sequenced(Protocol):
    """An entity's state knows the log ``seq`` of the last event it applied."""

    @property
    def seq(self) -> int: ...


S = TypeVar("S", bound=Sequenced)


#: What handling one message did: ``(new state, reply, number of events applied)``.
#: A plain tuple because one is built per message on the ingest path.
Outcome: TypeAlias = tuple[S, Any, int]


class Behavior(Protocol[S]):
    """How entities of one kind recover and handle messages."""

    kind: str

    def recover(self, entity_id: str, first_message: Any = None) -> tuple[S, int]:
        """The entity's state rebuilt from durable storage, and how many events were
        replayed on top of its snapshot (they count towards the next snapshot).

        ``first_message`` is the message that activates the entity; a behaviour
        may use it to skip reading what that message brings anyway.
        """
        ...

    def receive(self, state: S, message: Any) -> Outcome[S]:
        """Handle one message. Must not block; may raise (the runtime supervises)."""
        ...

    def snapshot(self, state: S) -> Snapshot:
        """The state, encoded for durable storage."""
        ...


@attrs.frozen(kw_only=True)
class RuntimeConfig:
    shards: int = 4
    mailbox_size: int = 1024
    passivate_after_s: float = 300.0
    max_active_per_shard: int = 100_000
    snapshot_every: int = 100
    #: Also snapshot an entity, when it applies an event, once its state is this many log
    #: positions past its last snapshot, or on its first event if it has none (0: never).
    #: ``snapshot_every`` counts an entity's own events, so an entity with few events keeps
    #: a long unsaved tail and a start after a crash replays it; with this, an event is
    #: unsaved only within this many positions of its entity's snapshot.
    snapshot_within: int = 0
    sweep_every_s: float = 1.0


@attrs.frozen(kw_only=True)
class RuntimeStatistics:
    kind: str
    active: int
    activations: int
    passivations: int
    restarts: int
    envelopes: int
    messages: int


@attrs.define(eq=False)
class _Activation:
    state: Any
    last_active: float
    unsaved: int = 0
    #: The ``seq`` of the state's last snapshot; ``None`` if there is none, or it is not known
    #: (the state was recovered with events on top of its snapshot): with
    #: ``snapshot_within``, its next event saves it.
    saved_seq: int | None = None


@attrs.frozen(eq=False)
class _Envelope:
    items: Sequence[tuple[str, Any]]
    #: Where an ``ask`` wants ``(tag, replies)``; replies align with ``items``.
    reply_to: trio.MemorySendChannel[tuple[int, list[Any]]] | None = None
    tag: int = 0
    completion: Completion | None = None


@attrs.define(eq=False)
class _Shard:
    send: trio.MemorySendChannel[_Envelope]
    receive: trio.MemoryReceiveChannel[_Envelope]
    #: Least recently used first. An OrderedDict because taking the oldest
    #: out of a plain dict scans past every earlier deletion.
    entities: OrderedDict[str, _Activation] = attrs.field(factory=OrderedDict)


class ActorRuntime(Generic[S]):
    """Virtual actors of one kind. Start with :meth:`run` in a nursery; stop with :meth:`aclose`."""

    def __init__(
        self,
        behavior: Behavior[S],
        *,
        save_snapshot: Callable[[Snapshot], None],
        config: RuntimeConfig | None = None,
    ) -> None:
        self.behavior = behavior
        self.kind = behavior.kind
        self.config = config or RuntimeConfig()
        self._save_snapshot = save_snapshot
        self._shards: list[_Shard] = []
        self._nshards = self.config.shards
        for _ in range(self.config.shards):
            send, receive = trio.open_memory_channel[_Envelope](self.config.mailbox_size)
            self._shards.append(_Shard(send=send, receive=receive))
        self._closed = False
        self._failures = RateLimitedLog(log)
        self._activations = 0
        self._passivations = 0
        self._restarts = 0
        self._envelopes = 0
        self._messages = 0

    # -- addressing -----------------------------------------------------------

    def shard_of(self, entity_id: str) -> int:
        """The shard an entity lives on in this process.

        Python's string hash is cached on the string and randomised per
        process, which is fine: shards are an in-memory arrangement only.
        """
        return hash(entity_id) % self._nshards

    async def _send(self, shard: int, envelope: _Envelope) -> None:
        if self._closed:
            raise SystemClosedError(f"{self.kind} actors are shutting down")
        try:
            await self._shards[shard].send.send(envelope)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise SystemClosedError(f"{self.kind} actors are shutting down") from None

    # -- reading without a message ----------------------------------------------

    def peek(self, entity_id: str) -> S | None:
        """The live state of an active entity, read past its mailbox; ``None`` if not active.

        For hot read paths that must not queue behind writes (the ranker). The
        state is the entity's own and is changed in place by its shard: read
        it only, and only until your next checkpoint. It reflects every
        message handled so far (so every acknowledged write), not those still
        queued. Not a checkpoint.
        """
        activation = self._shards[hash(entity_id) % self._nshards].entities.get(entity_id)
        return None if activation is None else activation.state

    # -- tell / ask -----------------------------------------------------------

    async def tell(self, entity_id: str, message: Any) -> None:
        """Deliver without waiting for handling; waits while the mailbox is full. A checkpoint."""
        await self._send(self.shard_of(entity_id), _Envelope(items=((entity_id, message),)))

    def tell_nowait(self, entity_id: str, message: Any) -> None:
        """Deliver without waiting at all.

        Raises:
            MailboxFullError: the entity's shard mailbox is full.
        """
        if self._closed:
            raise SystemClosedError(f"{self.kind} actors are shutting down")
        try:
            self._shards[self.shard_of(entity_id)].send.send_nowait(
                _Envelope(items=((entity_id, message),))
            )
        except trio.WouldBlock:
            raise MailboxFullError(f"{self.kind} mailbox full") from None

    def _positions_by_shard(self, items: Sequence[tuple[str, Any]]) -> dict[int, list[int]]:
        """Positions of ``(entity_id, message)`` pairs, grouped by the entity's shard, in order."""
        nshards = self._nshards  # shard_of, inlined: this runs per event
        positions: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            shard = hash(item[0]) % nshards
            if shard in positions:
                positions[shard].append(i)
            else:
                positions[shard] = [i]
        return positions

    def split(self, items: Sequence[tuple[str, Any]]) -> dict[int, list[tuple[str, Any]]]:
        """``(entity_id, message)`` pairs grouped by shard (order kept), for :meth:`tell_shards`."""
        return {
            shard: [items[i] for i in positions]
            for shard, positions in self._positions_by_shard(items).items()
        }

    async def tell_shards(
        self, by_shard: dict[int, list[tuple[str, Any]]], completion: Completion
    ) -> None:
        """Deliver ``(entity_id, message)`` pairs already split by :meth:`shard_of`.

        One envelope per shard; each counts ``completion`` down once handled.
        Order is kept per entity. A checkpoint.
        """
        for shard, shard_items in by_shard.items():
            await self._send(shard, _Envelope(items=shard_items, completion=completion))

    def handle_now(self, by_shard: dict[int, list[tuple[str, Any]]]) -> None:
        """Handle pairs already split by :meth:`shard_of` at once, on the caller's task.

        Not a checkpoint: no other task sees the entities half-way. For a caller
        that is the only sender of state-changing messages and that does not send
        the next until this returns (a reader's log follower): anything still in a
        mailbox is then a read, which sees the newer state. Messages :meth:`tell`
        or :meth:`tell_shards` sent earlier and not yet handled would be overtaken,
        so do not mix the two for the same entities.

        Raises:
            SystemClosedError: :meth:`aclose` was called.
        """
        if self._closed:
            raise SystemClosedError(f"{self.kind} actors are shutting down")
        for shard, shard_items in by_shard.items():
            self._handle(self._shards[shard], _Envelope(items=shard_items))

    async def ask(self, entity_id: str, message: Any) -> Any:
        """Deliver and wait for the reply. A checkpoint.

        Callers bound it with ``trio.fail_after`` (the reply channel is simply
        dropped if they give up). Returns an :class:`ActorError` if the actor
        failed handling the message (it was restarted).
        """
        (reply,) = await self.ask_many(((entity_id, message),))
        return reply

    async def ask_many(self, items: Sequence[tuple[str, Any]]) -> list[Any]:
        """``ask`` for many ``(entity_id, message)`` pairs at once; replies in the same order.

        One envelope per shard. A failed entity's reply slot holds its
        :class:`ActorError`, so one bad entity does not hide the others' answers.
        """
        if not items:
            return []
        slots = self._positions_by_shard(items)
        by_shard = {shard: [items[i] for i in positions] for shard, positions in slots.items()}
        send, receive = trio.open_memory_channel[tuple[int, list[Any]]](len(by_shard))
        replies: list[Any] = [None] * len(items)
        async with receive:
            for shard, shard_items in by_shard.items():
                await self._send(shard, _Envelope(items=shard_items, reply_to=send, tag=shard))
            for _ in by_shard:
                shard, shard_replies = await receive.receive()
                for i, reply in zip(slots[shard], shard_replies, strict=True):
                    replies[i] = reply
        return replies

    # -- running --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every shard until :meth:`aclose`; then snapshot changed entities and return."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweep_forever)
            async with trio.open_nursery() as shards:
                for shard in self._shards:
                    shards.start_soon(self._run_shard, shard)
                task_status.started()
            nursery.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Stop taking messages; shards finish what is queued, snapshot, and :meth:`run` returns."""
        self._closed = True
        for shard in self._shards:
            await shard.send.aclose()

    async def _run_shard(self, shard: _Shard) -> None:
        # No deadline around receive: under ingest load, a cancel scope per
        # envelope took ~5% of the event loop's py-spy samples. Passivation is
        # done by _sweep_forever instead.
        async with shard.receive:
            async for envelope in shard.receive:
                self._handle(shard, envelope)
        for entity_id in list(shard.entities):
            self._passivate(shard, entity_id)

    async def _sweep_forever(self) -> None:
        """Passivate idle entities every ``sweep_every_s``.

        Runs on the same thread as the shards and ``_handle`` never awaits, so
        a sweep always sees each shard between two envelopes.
        """
        while True:
            await trio.sleep(self.config.sweep_every_s)
            now = trio.current_time()
            for shard in self._shards:
                self._sweep(shard, now)

    def _handle(self, shard: _Shard, envelope: _Envelope) -> None:
        now = trio.current_time()
        entities = shard.entities
        replies: list[Any] = []
        self._envelopes += 1
        self._messages += len(envelope.items)
        receive = self.behavior.receive
        snapshot_every = self.config.snapshot_every
        within = self.config.snapshot_within
        for entity_id, message in envelope.items:
            try:
                activation = entities.get(entity_id)
                if activation is None:
                    recovered, replayed = self.behavior.recover(entity_id, message)
                    activation = _Activation(
                        state=recovered,
                        last_active=now,
                        unsaved=replayed,
                        # seq 0: a new entity, never saved.
                        saved_seq=None if replayed or not recovered.seq else recovered.seq,
                    )
                    self._activations += 1
                    entities[entity_id] = activation
                else:
                    entities.move_to_end(entity_id)
                state, reply, applied = receive(activation.state, message)
            except Exception as exc:
                self._restarts += 1
                # Once a minute per entity and error: a corrupt record fails every request
                # for its entity. Known errors are one line, bugs keep their traceback.
                self._failures.error(
                    f"{entity_id}:{type(exc).__name__}",
                    "%s actor %r failed on %s; restarting it from its durable state",
                    self.kind,
                    entity_id,
                    type(message).__name__,
                    exc=exc,
                )
                entities.pop(entity_id, None)  # restarted from durable state next time
                why = str(exc) if is_expected(exc) else repr(exc)
                replies.append(ActorError(f"{self.kind} {entity_id!r} failed: {why}"))
                continue
            activation.state = state
            activation.last_active = now
            if applied:
                activation.unsaved += applied
                saved = activation.saved_seq
                if activation.unsaved >= snapshot_every or (
                    within and (saved is None or state.seq - saved >= within)
                ):
                    self._save_snapshot(self.behavior.snapshot(state))
                    activation.unsaved = 0
                    activation.saved_seq = state.seq
            replies.append(reply)
        while len(entities) > self.config.max_active_per_shard:
            self._passivate(shard, next(iter(entities)))  # O(1) on an OrderedDict
        if envelope.reply_to is not None:
            # BrokenResourceError: the asker gave up (its deadline passed).
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                envelope.reply_to.send_nowait((envelope.tag, replies))
        if envelope.completion is not None:
            envelope.completion.finish_one()

    def _sweep(self, shard: _Shard, now: float) -> None:
        deadline = now - self.config.passivate_after_s
        entities = shard.entities
        while entities:
            entity_id = next(iter(entities))
            if entities[entity_id].last_active > deadline:
                break
            self._passivate(shard, entity_id)

    def _passivate(self, shard: _Shard, entity_id: str) -> None:
        activation = shard.entities.pop(entity_id)
        if activation.unsaved:
            self._save_snapshot(self.behavior.snapshot(activation.state))
        self._passivations += 1

    def statistics(self) -> RuntimeStatistics:
        return RuntimeStatistics(
            kind=self.kind,
            active=sum(len(s.entities) for s in self._shards),
            activations=self._activations,
            passivations=self._passivations,
            restarts=self._restarts,
            envelopes=self._envelopes,
            messages=self._messages,
        )
