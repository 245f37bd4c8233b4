"""The user's pure domain: counts, recent and seen items, dismissals and bounded, decaying
affinity, folded from interactions. No event loop."""

from __future__ import annotations

import pytest

from actors import Recent, user
from tests.actors.helpers import HALF_LIFE, interaction, stored, upserted, user_after


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
        user.fold(user.initial("u1"), stored(upserted()))
