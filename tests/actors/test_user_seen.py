"""A user's seen items: the whole history, its cached index ids, its snapshots old and new."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from actors import InteractionRecorded, MemoryEventStore, Snapshot, StoredEvent, UserState, user
from actors.codec import decode_state, encode_state
from actors.user_actor import user_actor

TYPES = ("view", "like", "dismiss")


def interaction(n: int, item_id: str, type_: str = "view") -> InteractionRecorded:
    return InteractionRecorded(
        id=f"e{n}", type=type_, user="u1", item=item_id, ts=float(n), item_terms={}
    )


def user_with(items: list[tuple[str, str]]) -> UserState:
    state = user.initial("u1")
    for n, (item_id, type_) in enumerate(items, start=1):
        user.apply(state, StoredEvent(seq=n, event=interaction(n, item_id, type_)))
    return state


def brute_force(state: UserState, docs: dict[str, int], *, dismissed_only: bool) -> BitMap:
    wanted = state.dismissed if dismissed_only else state.seen.keys()
    return BitMap([docs[i] for i in wanted if i in docs])


# Steps: interact with item k (0..39) by type, or ask for the exclusions (the index
# may know more items by then, or be another index numbering them the same).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 39), st.sampled_from(TYPES)),
        st.tuples(st.just("ask"), st.integers(0, 40), st.booleans()),
        st.tuples(st.just("new index"), st.integers(0, 40), st.booleans()),
    ),
    max_size=120,
)


@settings(max_examples=200)
@given(steps)
def test_excluded_docs_equal_the_index_ids_of_the_whole_history_at_every_request(
    script: list[tuple[str, int, object]],
) -> None:
    """The cached ids, brought up to date between requests, equal a lookup of every item."""
    state = user.initial("u1")
    docs: dict[str, int] = {}
    doc_of = docs.get
    for n, (what, k, arg) in enumerate(script, start=1):
        if what == "event":
            assert isinstance(arg, str)
            user.apply(state, StoredEvent(seq=n, event=interaction(n, f"i{k}", arg)))
            continue
        # The index knows the first k items (of 40), numbered backwards.
        docs.update({f"i{j}": 100 - j for j in range(k)})
        if what == "new index":
            docs = dict(docs)
            doc_of = docs.get
        dismissed_only = bool(arg)
        got = user.excluded_docs(state, doc_of, dismissed_only=dismissed_only)
        assert got == brute_force(state, docs, dismissed_only=dismissed_only)
        got.add(999)  # the caller's own copy
        assert 999 not in user.excluded_docs(state, doc_of)


def test_excluded_docs_cover_a_5000_item_history_and_pay_only_for_new_items() -> None:
    items = [(f"i{k}", "dismiss" if k % 100 == 0 else "view") for k in range(5000)]
    state = user_with(items)
    docs = {f"i{k}": k for k in range(6000)}
    lookups: list[str] = []

    def doc_of(item_id: str) -> int | None:
        lookups.append(item_id)
        return docs.get(item_id)

    assert user.excluded_docs(state, doc_of) == BitMap(range(5000))
    assert len(lookups) == 5000
    for n, k in enumerate(range(5000, 5010), start=5001):
        user.apply(state, StoredEvent(seq=n, event=interaction(n, f"i{k}")))
    lookups.clear()

    assert user.excluded_docs(state, doc_of) == BitMap(range(5010))
    assert lookups == [f"i{k}" for k in range(5000, 5010)]
    assert user.excluded_docs(state, docs.get, dismissed_only=True) == BitMap(range(0, 5000, 100))


def test_a_cache_left_far_behind_is_dropped_rather_than_kept_growing() -> None:
    state = user_with([("i0", "view")])
    docs = {f"i{k}": k for k in range(1000)}
    user.excluded_docs(state, docs.get)
    assert state.seen_docs is not None

    for n in range(2, user.SEEN_DOCS_SLACK + 3):
        user.apply(state, StoredEvent(seq=n, event=interaction(n, f"i{n}")))

    assert state.seen_docs is None
    assert user.excluded_docs(state, docs.get) == BitMap(docs[i] for i in state.seen)


def test_the_cache_is_neither_compared_nor_copied_nor_stored() -> None:
    state = user_with([("a", "view"), ("b", "dismiss")])
    user.excluded_docs(state, {"a": 1, "b": 2}.get)

    assert state == user_with([("a", "view"), ("b", "dismiss")])
    assert user.copy(state).seen_docs is None
    decoded = decode_state(encode_state(state))
    assert isinstance(decoded, UserState)
    assert decoded.seen_docs is None
    assert decoded == state


# -- snapshots -------------------------------------------------------------------------


def test_a_5000_item_history_snapshots_in_about_one_byte_more_than_its_ids() -> None:
    items = [(f"item-{k:06d}", "view") for k in range(5000)]
    big = user_with(items)
    without = user.copy(big)
    without.seen = {}

    extra = len(encode_state(big)) - len(encode_state(without))

    assert extra <= sum(len(i) + 1 for i, _ in items) + 4
    decoded = decode_state(encode_state(big))
    assert isinstance(decoded, UserState)
    assert list(decoded.seen) == [i for i, _ in items]


def test_ids_holding_the_separator_round_trip() -> None:
    state = user_with([("a\0b", "view"), ("", "dismiss"), ("c", "like")])
    decoded = decode_state(encode_state(state))

    assert decoded == state
    assert isinstance(decoded, UserState)
    assert list(decoded.seen) == ["a\0b", "", "c"]


def v1_snapshot(seen: dict[str, str], seq: int = 7) -> bytes:
    """A user snapshot as the codec wrote it before seen items were unbounded (v1)."""
    packed: bytes = msgpack.packb(
        [
            "user",
            1,
            {
                "id": "u1",
                "seq": seq,
                "counters": {"view": len(seen)},
                "recent": [["i0", "view", 1.0]],
                "affinity": {"city=x": 0.5},
                "landmark": 1.0,
                "seen": seen,
                "updated": 2.0,
            },
        ],
        use_bin_type=True,
    )
    return packed


def test_a_v1_snapshot_decodes_with_its_seen_items_and_dismissals() -> None:
    state = decode_state(v1_snapshot({"b": "view", "a": "dismiss", "c": "like"}))

    assert isinstance(state, UserState)
    assert list(state.seen) == ["b", "a", "c"]
    assert state.dismissed == {"a"}
    assert not state.partial
    assert (state.seq, state.counters, state.affinity) == (7, {"view": 3}, {"city=x": 0.5})
    assert [tuple(r) for r in state.recent] == [("i0", "view", 1.0)]


def test_a_full_v1_snapshot_may_have_forgotten_items_and_is_partial() -> None:
    state = decode_state(v1_snapshot({f"i{k}": "view" for k in range(1000)}))

    assert isinstance(state, UserState)
    assert state.partial


def test_a_user_whose_snapshot_is_partial_is_rebuilt_from_the_whole_stream() -> None:
    store = MemoryEventStore()
    store.append([interaction(n, f"i{n}") for n in range(1500)])
    last = store.last_seq()
    # What the v1 codec kept of this user: the latest 1,000 items.
    kept = {f"i{n}": "view" for n in range(500, 1500)}
    store.commit([], [Snapshot("user", "u1", last, v1_snapshot(kept, seq=last))])
    behavior = user_actor(store)

    state, replayed = behavior.recover("u1")

    assert replayed == 1500
    assert list(state.seen) == [f"i{n}" for n in range(1500)]
    assert not state.partial
    assert store.statistics().corrupt_snapshots == 0
