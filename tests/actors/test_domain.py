"""The pure domain: item decide/apply/evolve, user fold, forward-decayed sums, the codec.

No event loop.
"""

from __future__ import annotations

import itertools

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import actors
from actors import (
    CodecError,
    InteractionRecorded,
    ItemRemoved,
    ItemState,
    ItemUpserted,
    Recent,
    RecordInteraction,
    RemoveItem,
    StoredEvent,
    UpsertItem,
    UserState,
    decay,
    item,
    user,
)
from actors.codec import decode_event, decode_state, encode_event, encode_state

HALF_LIFE = decay.DEFAULT_HALF_LIFE_S


def stored(*events: actors.Event, start: int = 1) -> list[StoredEvent]:
    return [StoredEvent(seq=start + n, event=e) for n, e in enumerate(events)]


def upserted(event_id: str = "e", ts: float = 1.0, **fields: object) -> ItemUpserted:
    return ItemUpserted(id=event_id, item="i1", ts=ts, **fields)  # type: ignore[arg-type]


def interaction(
    event_id: str = "e",
    *,
    type: str = "like",
    item_id: str = "i1",
    ts: float = 1.0,
    weight: float = 1.0,
    item_terms: dict[str, tuple[str, ...]] | None = None,
) -> InteractionRecorded:
    return InteractionRecorded(
        id=event_id,
        type=type,
        user="u1",
        item=item_id,
        ts=ts,
        weight=weight,
        item_terms=item_terms or {},
    )


def item_after(*events: actors.Event) -> ItemState:
    return item.fold(item.initial("i1"), stored(*events))


def user_after(*events: InteractionRecorded) -> UserState:
    return user.fold(user.initial("u1"), stored(*events))


# -- item: upserts ----------------------------------------------------------------


def test_new_item_does_not_exist() -> None:
    state = item.initial("i1")

    assert state == ItemState(id="i1")
    assert not state.exists
    assert not state.active
    assert state.seq == 0


def test_first_upsert_creates_an_active_item() -> None:
    state = item_after(
        upserted(kind="pro", terms={"city": ("austin",)}, numbers={"price": 10.0}, ts=5.0)
    )

    assert state.exists
    assert state.active
    assert state.kind == "pro"
    assert state.terms == {"city": ("austin",)}
    assert state.numbers == {"price": 10.0}
    assert state.seq == 1
    # Catalogue changes carry the server's clock: they do not move `updated`.
    assert state.updated == 0.0


def test_first_upsert_may_create_an_inactive_item() -> None:
    assert not item_after(upserted(active=False)).active


def test_upsert_without_active_keeps_the_current_flag() -> None:
    state = item_after(upserted("e1", active=False), upserted("e2", terms={"a": ("b",)}))

    assert state.exists
    assert not state.active


def test_upsert_replaces_given_fields_and_keeps_the_others() -> None:
    state = item_after(
        upserted(
            "e1",
            kind="pro",
            terms={"city": ("austin",), "skills": ("go",)},
            numbers={"price": 10.0, "rate": 1.0},
        ),
        upserted("e2", terms={"skills": ("rust", "python")}, numbers={"rate": 2.0}),
    )

    assert state.kind == "pro"
    assert state.terms == {"city": ("austin",), "skills": ("python", "rust")}
    assert state.numbers == {"price": 10.0, "rate": 2.0}
    assert state.seq == 2


@pytest.mark.parametrize("removed", [None, ()], ids=["none", "empty"])
def test_upsert_with_none_or_empty_terms_removes_the_field(removed: tuple[str, ...] | None) -> None:
    state = item_after(
        upserted("e1", terms={"city": ("austin",), "skills": ("go",)}),
        upserted("e2", terms={"city": removed}),
    )

    assert state.terms == {"skills": ("go",)}


def test_upsert_with_none_number_removes_the_field() -> None:
    state = item_after(
        upserted("e1", numbers={"price": 10.0, "rate": 1.0}),
        upserted("e2", numbers={"price": None}),
    )

    assert state.numbers == {"rate": 1.0}


def test_removing_an_absent_field_is_a_no_op() -> None:
    state = item_after(upserted("e1", terms={"missing": None}, numbers={"missing": None}))

    assert state.terms == {}
    assert state.numbers == {}
    assert state.exists


def test_term_values_are_kept_sorted_and_distinct() -> None:
    state = item_after(upserted(terms={"skills": ("rust", "go", "rust", "c")}))

    assert state.terms == {"skills": ("c", "go", "rust")}


def test_upsert_with_kind_none_keeps_the_kind() -> None:
    state = item_after(upserted("e1", kind="pro"), upserted("e2", kind=None))

    assert state.kind == "pro"


def test_updated_is_the_latest_interaction_time_not_the_last() -> None:
    state = item_after(
        interaction("e1", ts=50.0), interaction("e2", ts=10.0), upserted("e3", ts=99.0)
    )

    assert state.updated == 50.0
    assert state.seq == 3


# -- item: removal --------------------------------------------------------------------


def test_removal_resets_the_item() -> None:
    state = item_after(
        upserted("e1", kind="pro", terms={"a": ("b",)}, numbers={"n": 1.0}, ts=3.0),
        interaction("e2", ts=4.0),
        ItemRemoved(id="e3", item="i1", ts=5.0),
    )

    assert state == ItemState(id="i1", seq=3, updated=4.0)


def test_upsert_after_removal_starts_afresh() -> None:
    state = item_after(
        upserted("e1", terms={"a": ("b",)}, active=False),
        ItemRemoved(id="e2", item="i1", ts=2.0),
        upserted("e3", terms={"c": ("d",)}),
    )

    assert state.exists
    assert state.active  # default for a (re)created item
    assert state.terms == {"c": ("d",)}


def test_decide_remove_on_missing_item_yields_nothing() -> None:
    command = RemoveItem(event_id="r1", item="i1", ts=1.0)

    assert item.decide(item.initial("i1"), command) == ()
    removed = item_after(upserted("e1"), ItemRemoved(id="e2", item="i1", ts=2.0))
    assert item.decide(removed, command) == ()


def test_decide_remove_on_existing_item_yields_item_removed() -> None:
    command = RemoveItem(event_id="r1", item="i1", ts=7.0)

    assert item.decide(item_after(upserted()), command) == (
        ItemRemoved(id="r1", item="i1", ts=7.0),
    )


def test_decide_upsert_yields_the_upsert_as_given() -> None:
    command = UpsertItem(
        event_id="u1",
        item="i1",
        ts=2.0,
        kind=None,
        terms={"city": None},
        numbers={"price": 3.0},
        active=False,
    )

    assert item.decide(item.initial("i1"), command) == (
        ItemUpserted(
            id="u1",
            item="i1",
            ts=2.0,
            kind=None,
            terms={"city": None},
            numbers={"price": 3.0},
            active=False,
        ),
    )


# -- item: interactions ------------------------------------------------------------------


def record(state: ItemState) -> InteractionRecorded:
    command = RecordInteraction(
        id="x1", type="like", user="u1", item="i1", ts=9.0, weight=2.0, props={"p": 1}
    )
    (event,) = item.decide(state, command)
    assert isinstance(event, InteractionRecorded)
    assert (event.id, event.type, event.user, event.item, event.ts, event.weight) == (
        "x1",
        "like",
        "u1",
        "i1",
        9.0,
        2.0,
    )
    assert event.props == {"p": 1}
    return event


def test_decide_interaction_stamps_the_items_current_terms() -> None:
    state = item_after(upserted("e1", terms={"city": ("austin",), "skills": ("go",)}))

    assert record(state).item_terms == {"city": ("austin",), "skills": ("go",)}


def test_decide_interaction_on_unknown_or_removed_item_stamps_no_terms() -> None:
    assert record(item.initial("i1")).item_terms == {}
    removed = item_after(
        upserted("e1", terms={"city": ("austin",)}), ItemRemoved(id="e2", item="i1", ts=2.0)
    )
    assert record(removed).item_terms == {}


def test_interactions_count_per_type() -> None:
    state = item_after(
        interaction("e1", type="view"),
        interaction("e2", type="view"),
        interaction("e3", type="like"),
    )

    assert state.counters == {"view": 2, "like": 1}
    # Interactions alone do not make an item exist.
    assert not state.exists


def test_interactions_at_one_time_sum_their_weights() -> None:
    state = item_after(
        interaction("e1", ts=100.0, weight=1.0),
        interaction("e2", ts=100.0, weight=2.5),
        interaction("e3", ts=100.0, type="view", weight=0.5),
    )

    assert item.decayed_at(state, 100.0) == {"like": 3.5, "view": 0.5}


def test_interaction_a_half_life_later_halves_the_earlier_sum() -> None:
    state = item_after(
        interaction("e1", ts=0.0, weight=4.0),
        interaction("e2", ts=HALF_LIFE, weight=1.0),
    )

    assert item.decayed_at(state, HALF_LIFE) == {"like": pytest.approx(3.0)}
    assert item.decayed_at(state, 2 * HALF_LIFE) == {"like": pytest.approx(1.5)}


def test_late_interaction_counts_decayed_to_the_latest_time() -> None:
    state = item_after(
        interaction("e1", ts=HALF_LIFE, weight=1.0),
        interaction("e2", ts=0.0, weight=4.0),
    )

    assert item.decayed_at(state, HALF_LIFE) == {"like": pytest.approx(3.0)}
    assert state.updated == HALF_LIFE


def test_first_interaction_sets_the_landmark() -> None:
    state = item_after(
        upserted("e1", ts=5.0), interaction("e2", ts=50.0), interaction("e3", ts=9.0)
    )

    assert state.landmark == 50.0


def test_landmark_moves_forward_when_masses_would_grow_too_large() -> None:
    late = (decay.RESCALE_AFTER + 36) * HALF_LIFE
    state = item_after(
        interaction("e1", ts=0.0, weight=1.0),
        interaction("e2", ts=HALF_LIFE, weight=1.0),
        interaction("e3", ts=late, weight=1.0),
    )

    assert state.landmark == late
    expected = 1.0 + 2.0 ** -(decay.RESCALE_AFTER + 35) + 2.0 ** -(decay.RESCALE_AFTER + 36)
    assert item.decayed_at(state, late)["like"] == pytest.approx(expected, rel=1e-12)
    # Masses stay near the decayed values instead of growing without bound.
    assert state.decayed["like"] == pytest.approx(expected, rel=1e-12)


def test_removal_forgets_interaction_sums_and_landmark() -> None:
    state = item_after(interaction("e1", ts=500.0), ItemRemoved(id="e2", item="i1", ts=600.0))

    assert state.decayed == {}
    assert state.counters == {}
    assert state.landmark == 0.0
    assert item.decayed_at(state, 600.0) == {}


def test_evolve_is_fold_of_one_event() -> None:
    events = stored(upserted("e1", terms={"a": ("b",)}), interaction("e2"))

    by_evolve = item.initial("i1")
    for e in events:
        by_evolve = item.evolve(by_evolve, e)

    assert by_evolve == item.fold(item.initial("i1"), events)


def test_apply_in_place_equals_evolve() -> None:
    events = stored(
        upserted("e1", terms={"a": ("b",)}, numbers={"n": 1.0}),
        interaction("e2", ts=3.0),
        upserted("e3", terms={"a": None}, numbers={"n": None}),
        ItemRemoved(id="e4", item="i1", ts=4.0),
        upserted("e5", kind="job"),
    )
    in_place = item.initial("i1")
    pure = item.initial("i1")

    for e in events:
        item.apply(in_place, e)
        pure = item.evolve(pure, e)
        assert in_place == pure


def test_evolve_and_fold_do_not_change_the_given_state() -> None:
    before = item_after(upserted("e1", terms={"a": ("b",)}, numbers={"n": 1.0}), interaction())
    snapshot = item.copy(before)
    later = stored(
        upserted("e3", terms={"a": None}, numbers={"n": None, "m": 2.0}),
        interaction("e4", type="view", ts=2.0),
        start=10,
    )

    item.fold(before, later)
    item.evolve(before, later[0])
    item.fold(before, stored(ItemRemoved(id="e5", item="i1", ts=1.0), start=10))

    assert before == snapshot


def test_interaction_event_keeps_the_terms_it_was_stamped_with() -> None:
    """The stamped terms are shared with the item's state, so later upserts must not change them."""
    state = item_after(upserted("e1", terms={"city": ("austin",)}))
    event = record(state)

    item.apply(state, stored(upserted("e2", terms={"city": ("boston",), "x": ("y",)}), start=2)[0])
    item.apply(state, stored(ItemRemoved(id="e3", item="i1", ts=2.0), start=3)[0])

    assert event.item_terms == {"city": ("austin",)}


def test_get_state_copy_is_independent() -> None:
    state = item_after(upserted("e1", terms={"a": ("b",)}, numbers={"n": 1.0}), interaction())
    copied = item.copy(state)

    item.apply(state, stored(upserted("e3", numbers={"n": 5.0}), interaction("e4"), start=3)[0])
    item.apply(state, stored(interaction("e4"), start=4)[0])

    assert copied.numbers == {"n": 1.0}
    assert copied.counters == {"like": 1}


# -- user ------------------------------------------------------------------------------------


def test_user_counts_interactions_per_type() -> None:
    state = user_after(
        interaction("e1", type="view", ts=1.0),
        interaction("e2", type="like", ts=3.0),
        interaction("e3", type="view", ts=2.0),
    )

    assert state.counters == {"view": 2, "like": 1}
    assert state.seq == 3
    assert state.updated == 3.0


def test_user_recent_keeps_the_newest_interactions_oldest_first() -> None:
    n = user.RECENT_MAX + 7
    state = user_after(*(interaction(f"e{k}", item_id=f"i{k}", ts=float(k)) for k in range(n)))

    assert len(state.recent) == user.RECENT_MAX
    assert state.recent[0] == Recent(f"i{n - user.RECENT_MAX}", "like", float(n - user.RECENT_MAX))
    assert state.recent[-1] == Recent(f"i{n - 1}", "like", float(n - 1))


def test_user_recent_is_bounded_when_built_one_event_at_a_time() -> None:
    state = user.initial("u1")
    for k, e in enumerate(stored(*(interaction(f"e{k}", item_id=f"i{k}") for k in range(60)))):
        state = user.evolve(state, e)
        assert len(state.recent) == min(k + 1, user.RECENT_MAX)

    assert state.recent[0].item == "i10"


def test_user_seen_keeps_items_in_first_interaction_order() -> None:
    state = user_after(
        interaction("e1", item_id="a", type="view"),
        interaction("e2", item_id="b", type="view"),
        interaction("e3", item_id="a", type="like"),
    )

    assert list(state.seen) == ["a", "b"]


def test_user_dismissed_holds_items_whose_latest_interaction_is_a_dismissal() -> None:
    state = user_after(
        interaction("e1", item_id="a", type="dismiss"),
        interaction("e2", item_id="b", type="dismiss"),
        interaction("e3", item_id="a", type="like"),
        interaction("e4", item_id="c", type="view"),
        interaction("e5", item_id="c", type="dismiss"),
    )

    assert state.dismissed == {"b", "c"}
    assert list(state.seen) == ["a", "b", "c"]


def test_user_seen_is_never_bounded() -> None:
    events = [interaction(f"e{k}", item_id=f"i{k}") for k in range(5000)]
    events.append(interaction("again", item_id="i0", type="save"))

    state = user_after(*events)

    assert list(state.seen) == [f"i{k}" for k in range(5000)]


@pytest.mark.parametrize(
    "type_", ["view", "click", "like", "save", "hire", "dismiss", "accept", "decline"]
)
def test_user_affinity_is_weighted_by_event_type(type_: str) -> None:
    state = user_after(
        interaction(type=type_, ts=10.0, weight=2.0, item_terms={"city": ("austin", "boston")})
    )

    expected = 2.0 * user.TYPE_WEIGHTS[type_]
    assert user.affinity_at(state, 10.0) == {"city=austin": expected, "city=boston": expected}


def test_dismiss_moves_affinity_down() -> None:
    state = user_after(
        interaction("e1", type="like", ts=5.0, item_terms={"city": ("austin",)}),
        interaction("e2", type="dismiss", ts=5.0, item_terms={"city": ("austin",)}),
        interaction("e3", type="dismiss", ts=5.0, item_terms={"city": ("austin",)}),
    )

    assert user.TYPE_WEIGHTS["dismiss"] < 0
    assert user.affinity_at(state, 5.0) == {"city=austin": -1.0}


def test_unknown_type_gets_the_default_weight() -> None:
    state = user_after(interaction(type="custom", ts=1.0, item_terms={"a": ("b",)}))

    assert user.affinity_at(state, 1.0) == {"a=b": user.OTHER_TYPE_WEIGHT}
    assert state.counters == {"custom": 1}


def test_zero_weight_interaction_adds_no_affinity() -> None:
    state = user_after(interaction(weight=0.0, item_terms={"a": ("b",)}))

    assert state.affinity == {}
    assert state.counters == {"like": 1}


def test_user_affinity_decays_with_half_life() -> None:
    state = user_after(
        interaction("e1", ts=0.0, weight=1.0, item_terms={"a": ("old",)}),
        interaction("e2", ts=2 * HALF_LIFE, weight=1.0, item_terms={"a": ("new",)}),
    )

    values = user.affinity_at(state, 2 * HALF_LIFE)
    assert values == {"a=new": pytest.approx(1.0), "a=old": pytest.approx(0.25)}
    # Strongest first.
    assert list(values) == ["a=new", "a=old"]


def test_affinity_at_orders_by_magnitude() -> None:
    state = user_after(
        interaction("e1", type="view", ts=1.0, item_terms={"a": ("weak",)}),
        interaction("e2", type="dismiss", ts=1.0, item_terms={"a": ("negative",)}),
        interaction("e3", type="hire", ts=1.0, item_terms={"a": ("strong",)}),
    )

    assert list(user.affinity_at(state, 1.0)) == ["a=strong", "a=negative", "a=weak"]


def test_user_affinity_is_bounded_keeping_the_strongest_terms() -> None:
    # One weak term per view, then strong likes for AFFINITY_MAX other terms.
    events = [
        interaction(f"w{k}", type="view", ts=1.0, item_terms={"weak": (f"v{k}",)})
        for k in range(10)
    ]
    events += [
        interaction(f"s{k}", type="like", ts=1.0, item_terms={"strong": (f"v{k}",)})
        for k in range(user.AFFINITY_MAX)
    ]

    state = user_after(*events)

    assert len(state.affinity) == user.AFFINITY_MAX
    assert all(key.startswith("strong=") for key in state.affinity)


def test_user_affinity_trims_by_decayed_strength_not_raw_weight() -> None:
    """An old strong term loses to newer weaker ones once decay has made it weaker."""
    old = interaction("old", type="hire", ts=0.0, item_terms={"old": ("x",)})  # 2.0, 10 HL ago
    fresh = [
        interaction(f"n{k}", type="view", ts=10 * HALF_LIFE, item_terms={"new": (f"v{k}",)})
        for k in range(user.AFFINITY_MAX)
    ]

    state = user_after(old, *fresh)

    assert "old=x" not in state.affinity
    assert len(state.affinity) == user.AFFINITY_MAX


def test_user_affinity_never_exceeds_the_bound_while_folding() -> None:
    state = user.initial("u1")
    for k, e in enumerate(
        stored(
            *(
                interaction(f"e{k}", ts=float(k), item_terms={"f": (f"a{k}", f"b{k}")})
                for k in range(user.AFFINITY_MAX)
            )
        )
    ):
        state = user.evolve(state, e)
        assert len(state.affinity) == min(2 * (k + 1), user.AFFINITY_MAX)


def test_user_apply_in_place_equals_evolve() -> None:
    events = stored(
        *(
            interaction(
                f"e{k}",
                type=["view", "like", "dismiss", "custom"][k % 4],
                item_id=f"i{k % 7}",
                ts=float(k * 3600),
                item_terms={"f": (f"v{k % 11}",)},
            )
            for k in range(120)
        )
    )
    in_place = user.initial("u1")
    pure = user.initial("u1")

    for e in events:
        user.apply(in_place, e)
        pure = user.evolve(pure, e)

    assert in_place == pure
    assert len(in_place.recent) == user.RECENT_MAX


def test_user_fold_rejects_catalogue_events() -> None:
    with pytest.raises(TypeError):
        user_after(upserted())  # type: ignore[arg-type]


# -- decayed sums ---------------------------------------------------------------------------


def test_value_halves_every_half_life() -> None:
    assert decay.value_at(8.0, 100.0, 100.0) == 8.0
    assert decay.value_at(8.0, 100.0, 100.0 + HALF_LIFE) == 4.0
    assert decay.value_at(8.0, 100.0, 100.0 + 3 * HALF_LIFE) == 1.0
    assert decay.value_at(8.0, 100.0, 110.0, half_life=10.0) == 4.0


def test_growth_doubles_every_half_life_past_the_landmark() -> None:
    assert decay.growth(100.0, 100.0) == 1.0
    assert decay.growth(100.0 + HALF_LIFE, 100.0) == 2.0
    assert decay.growth(100.0 - HALF_LIFE, 100.0) == 0.5


def test_weight_turned_into_mass_is_worth_the_weight_at_its_time() -> None:
    for ts in (0.0, 12_345.0, 40 * HALF_LIFE):
        mass = 3.0 * decay.growth(ts, 0.0)
        assert decay.value_at(mass, 0.0, ts) == pytest.approx(3.0)


def test_rescale_keeps_values() -> None:
    masses = {"a": 3.0 * decay.growth(70 * HALF_LIFE, 0.0), "b": 1.0}
    before = {k: decay.value_at(m, 0.0, 80 * HALF_LIFE) for k, m in masses.items()}

    decay.rescale(masses, 0.0, 70 * HALF_LIFE)

    after = {k: decay.value_at(m, 70 * HALF_LIFE, 80 * HALF_LIFE) for k, m in masses.items()}
    assert after == pytest.approx(before, rel=1e-12)
    assert masses["a"] == pytest.approx(3.0)


def test_rescale_is_needed_only_far_past_the_landmark() -> None:
    assert not decay.needs_rescale(decay.RESCALE_AFTER * HALF_LIFE, 0.0)
    assert decay.needs_rescale(decay.RESCALE_AFTER * HALF_LIFE + 1.0, 0.0)
    assert not decay.needs_rescale(-1e12, 0.0)


contributions = st.lists(
    st.tuples(
        st.floats(min_value=-10.0, max_value=10.0),
        # Up to 200 half-lives: crosses the rescale threshold in some orders.
        st.floats(min_value=0.0, max_value=200 * HALF_LIFE),
        st.sampled_from(["like", "view"]),
    ),
    min_size=1,
    max_size=10,
)


def decayed_sums(order: list[tuple[float, float, str]], at: float) -> dict[str, float]:
    events = [
        interaction(f"e{n}", type=type_, ts=ts, weight=w) for n, (w, ts, type_) in enumerate(order)
    ]
    return item.decayed_at(item_after(*events), at)


@given(contributions, st.randoms(use_true_random=False))
def test_order_of_contributions_does_not_matter(
    items: list[tuple[float, float, str]], rng: object
) -> None:
    shuffled = list(items)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    at = max(ts for _, ts, _ in items)

    a, b = decayed_sums(items, at), decayed_sums(shuffled, at)

    assert a.keys() == b.keys()
    scale = sum(abs(w) for w, _, _ in items)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12 * scale)


@given(contributions)
def test_decayed_sum_matches_the_direct_formula(items: list[tuple[float, float, str]]) -> None:
    at = max(ts for _, ts, _ in items)

    got = decayed_sums(items, at)

    scale = sum(abs(w) for w, _, _ in items)
    for type_ in got:
        direct = sum(w * 2.0 ** (-(at - ts) / HALF_LIFE) for w, ts, t in items if t == type_)
        assert got[type_] == pytest.approx(direct, rel=1e-9, abs=1e-12 * scale)


def test_every_permutation_of_three_contributions_agrees() -> None:
    items = [(1.0, 0.0, "like"), (2.0, HALF_LIFE, "like"), (4.0, 3 * HALF_LIFE, "like")]
    results = {
        round(decayed_sums(list(order), 3 * HALF_LIFE)["like"], 12)
        for order in itertools.permutations(items)
    }

    assert results == {round(4.0 + 2.0 / 4 + 1.0 / 8, 12)}


# -- codec ----------------------------------------------------------------------------------------

ids = st.text(min_size=1, max_size=20)
times = st.floats(min_value=-1e10, max_value=1e10, allow_nan=False, allow_infinity=False)
floats = st.floats(allow_nan=False)
term_values = st.lists(st.text(max_size=8), max_size=3).map(tuple)
terms = st.dictionaries(st.text(max_size=8), term_values, max_size=4)
partial_terms = st.dictionaries(st.text(max_size=8), st.none() | term_values, max_size=4)
partial_numbers = st.dictionaries(st.text(max_size=8), st.none() | floats, max_size=4)
# msgpack turns tuples into lists, so props hold lists (as they do after an RPC).
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | floats
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)

interactions = st.builds(
    InteractionRecorded,
    id=ids,
    type=st.sampled_from(["view", "like", "dismiss", "custom"]) | st.text(max_size=10),
    user=ids,
    item=ids,
    ts=times,
    weight=floats,
    props=st.dictionaries(st.text(max_size=8), json_like, max_size=4),
    item_terms=terms,
)
upserts = st.builds(
    ItemUpserted,
    id=ids,
    item=ids,
    ts=times,
    kind=st.none() | st.text(max_size=8),
    terms=st.none() | partial_terms,
    numbers=st.none() | partial_numbers,
    active=st.none() | st.booleans(),
)
removals = st.builds(ItemRemoved, id=ids, item=ids, ts=times)
events = st.one_of(interactions, upserts, removals)

masses = st.dictionaries(st.text(max_size=8), floats, max_size=4)
item_states = st.builds(
    ItemState,
    id=ids,
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    exists=st.booleans(),
    kind=st.none() | st.text(max_size=8),
    terms=st.dictionaries(st.text(max_size=8), term_values, max_size=4),
    numbers=st.dictionaries(st.text(max_size=8), floats, max_size=4),
    active=st.booleans(),
    counters=st.dictionaries(st.text(max_size=8), st.integers(0, 2**40), max_size=4),
    decayed=masses,
    landmark=times,
    updated=times,
)
user_states = st.builds(
    UserState,
    id=ids,
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    counters=st.dictionaries(st.text(max_size=8), st.integers(0, 2**40), max_size=4),
    recent=st.lists(st.builds(Recent, ids, st.text(max_size=8), times), max_size=5),
    affinity=masses,
    landmark=times,
    seen=st.dictionaries(ids, st.none(), max_size=5),
    dismissed=st.sets(ids, max_size=3),
    updated=times,
    partial=st.booleans(),
)


@settings(max_examples=200)
@given(events)
def test_event_codec_round_trips(event: actors.Event) -> None:
    assert decode_event(encode_event(event)) == event


@given(st.one_of(item_states, user_states))
def test_state_codec_round_trips(state: ItemState | UserState) -> None:
    decoded = decode_state(encode_state(state))

    assert type(decoded) is type(state)
    assert decoded == state
    # Order matters for the bounded collections (eviction order), not only content.
    if isinstance(state, UserState):
        assert isinstance(decoded, UserState)
        assert list(decoded.seen) == list(state.seen)
        assert all(isinstance(r, Recent) for r in decoded.recent)
    else:
        assert isinstance(decoded, ItemState)
        assert all(type(v) is tuple for v in decoded.terms.values())


def test_state_folded_from_events_round_trips() -> None:
    item_state = item_after(
        upserted("e1", terms={"a": ("b", "c")}, numbers={"n": 2.5}), interaction("e2", ts=7.0)
    )
    user_state = user_after(
        *(
            interaction(f"e{k}", item_id=f"i{k}", ts=float(k), item_terms={"a": ("b",)})
            for k in range(60)
        )
    )

    assert decode_state(encode_state(item_state)) == item_state
    assert decode_state(encode_state(user_state)) == user_state


def test_unknown_event_topic_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="unknown event topic"):
        decode_event(msgpack.packb(["no_such_topic", 1, ["x"]]))


def test_event_from_a_newer_build_raises_codec_error() -> None:
    data = msgpack.packb(["item_removed", 99, ["e", "i", 1.0]])

    with pytest.raises(CodecError):
        decode_event(data)


def test_event_of_the_wrong_shape_raises_codec_error() -> None:
    with pytest.raises(CodecError):
        decode_event(msgpack.packb(["item_removed", 1, ["e", "i"]]))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x93\x01", msgpack.packb(7)])
def test_corrupt_event_bytes_raise_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_event(data)


def test_unknown_snapshot_kind_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="unknown snapshot kind"):
        decode_state(msgpack.packb(["planet", 1, {}]))


def test_snapshot_missing_a_field_raises_codec_error() -> None:
    with pytest.raises(CodecError):
        decode_state(msgpack.packb(["user", 1, {"id": "u1"}]))


def test_codec_error_is_a_store_error() -> None:
    assert issubclass(CodecError, actors.StoreError)
