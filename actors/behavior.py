"""Event-sourced behaviour shared by the user and item actors.

An event-sourced actor's state is a fold of its stream: :meth:`recover` loads
the latest snapshot and applies the events after it; a snapshot that does
not decode to this entity's state at its ``seq`` is reported to the store
(logged, counted, replaced later) and the whole stream replayed instead, so
a damaged snapshot is never served. A snapshot that decodes but lacks part
of what the state now keeps (``replay_if`` says so: a user snapshot from
before seen items were unbounded) is passed over the same way, without a
report. Each event delivered in
an ``ApplyEvents`` is applied unless the state's ``seq`` already covers it,
which makes delivery idempotent and lets a recovery race a queued delivery
safely. After applying a delivery it calls ``on_applied`` with the new
state (the item actor keeps the search index current that way, before the
writer answers the caller). ``GetState`` answers a copy of the state, and a
command is answered with the events the pure ``decide`` makes of it.

The state object belongs to the actor's activation and is updated in place
(see :func:`actors.item.apply`); nothing else holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Generic, Protocol, TypeVar

from actors.codec import decode_state, encode_state
from actors.errors import CodecError
from actors.events import StoredEvent
from actors.item import ItemState
from actors.messages import ApplyEvents, GetState
from actors.runtime import Outcome
from actors.store import EventStore, Snapshot
from actors.user import UserState

#: The state a snapshot of each kind must decode to.
_STATE_TYPES: Final[dict[str, type]] = {"item": ItemState, "user": UserState}


class _HasSeq(Protocol):
    seq: int
    id: str


S = TypeVar("S", bound=_HasSeq)


class EventSourcedBehavior(Generic[S]):
    def __init__(
        self,
        *,
        kind: str,
        store: EventStore,
        initial: Callable[[str], S],
        apply: Callable[[S, StoredEvent], None],
        copy: Callable[[S], S],
        decide: Callable[[S, Any], tuple[Any, ...]] | None = None,
        commands: tuple[type, ...] = (),
        on_applied: Callable[[S], None] | None = None,
        replay_if: Callable[[S], bool] | None = None,
    ) -> None:
        self.kind = kind
        self._store = store
        self._initial = initial
        self._apply = apply
        self._copy = copy
        self._decide = decide
        self._commands = commands
        self._on_applied = on_applied
        self._replay_if = replay_if

    def recover(self, entity_id: str, first_message: Any = None) -> tuple[S, int]:
        # Activated to apply committed events: read the stream only up to just
        # before them; the message brings those events itself, already decoded.
        # (For a new entity that is most of its stream.)
        until = None
        if type(first_message) is ApplyEvents and first_message.events:
            until = first_message.events[0].seq - 1
        store = self._store
        snapshot, tail = store.load_entity(self.kind, entity_id, until)
        state: S | None = None
        if snapshot is not None:
            state = decoded_snapshot(store, snapshot)  # type: ignore[assignment]
            if state is not None and self._replay_if is not None and self._replay_if(state):
                state = None  # readable, but not all of the state: no report
            if state is None:  # (if corrupt, reported) rebuild from the whole stream
                tail = store.read_stream(self.kind, entity_id, 0, until)
        if state is None:
            state = self._initial(entity_id)
        for stored in tail:
            self._apply(state, stored)
        if tail and self._on_applied is not None:
            # Usually a no-op for the index; after a supervised restart it catches up.
            self._on_applied(state)
        return state, len(tail)

    def receive(self, state: S, message: Any) -> Outcome[S]:
        if type(message) is ApplyEvents:
            apply, applied = self._apply, 0
            for stored in message.events:
                if stored.seq > state.seq:
                    apply(state, stored)
                    applied += 1
            if applied and self._on_applied is not None:
                self._on_applied(state)
            return (state, None, applied)
        if type(message) in self._commands and self._decide is not None:
            return (state, self._decide(state, message), 0)
        if type(message) is GetState:
            return (state, self._copy(state), 0)
        raise TypeError(f"{self.kind} actor cannot handle {type(message).__name__}")

    def snapshot(self, state: S) -> Snapshot:
        return Snapshot(
            kind=self.kind,
            entity_id=state.id,
            seq=state.seq,
            data=encode_state(state),  # type: ignore[arg-type]
        )


def decoded_snapshot(store: EventStore, snapshot: Snapshot) -> ItemState | UserState | None:
    """The state ``snapshot`` holds, or ``None`` if it is not its entity's state at its
    ``seq`` (then the store is told: it logs, counts and later replaces it)."""
    try:
        decoded = decode_state(snapshot.data)
    except CodecError as exc:
        problem = str(exc)
    else:
        expected = _STATE_TYPES.get(snapshot.kind)
        if expected is not None and type(decoded) is not expected:
            problem = f"it holds a {type(decoded).__name__}"
        elif decoded.id != snapshot.entity_id or decoded.seq != snapshot.seq:
            problem = f"it holds {decoded.id!r} at seq {decoded.seq}"
        else:
            return decoded
    store.report_corrupt_snapshot(snapshot, problem)
    return None
