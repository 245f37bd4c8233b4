"""The item's pure domain: decide, apply and evolve for upserts, removals and
interactions. No event loop."""

from __future__ import annotations

import pytest

from actors import (
    InteractionRecorded,
    ItemRemoved,
    ItemState,
    ItemUpserted,
    RecordInteraction,
    RemoveItem,
    UpsertItem,
    decay,
    item,
)
from tests.actors.helpers import HALF_LIFE, interaction, item_after, stored, upserted

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
