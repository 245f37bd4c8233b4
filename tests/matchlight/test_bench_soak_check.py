"""The soak's checks (:mod:`matchlight.bench.soak_check`) on logs written by hand."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from actors import InteractionRecorded, ItemRemoved, ItemUpserted, LmdbEventStore
from matchlight.bench.soak_check import compare_state, read_log
from matchlight.client import Client, NotFound

RUN = "r1"
BATCH = 4


def like(event_id: str, user: str, item: str, kind: str = "like") -> InteractionRecorded:
    return InteractionRecorded(id=event_id, type=kind, user=user, item=item, ts=1.7e9)


def write_log(path: Path, *events: Any) -> None:
    store = LmdbEventStore(path / "events", map_size=1 << 20)
    try:
        store.append(list(events))
    finally:
        store.close()


def client_report(batches: int, acked: list[int]) -> dict[str, Any]:
    return {"batch": BATCH, "batches": batches, "acked_batches": acked}


def test_an_acknowledged_event_missing_from_the_log_is_lost(tmp_path: Path) -> None:
    # Client 0 sent two batches (ids 0-3 and 4-7), both acknowledged; id 6 is not in the log.
    # Client 1's only batch was never acknowledged, and half of it is in the log.
    ids = [f"{RUN}-0-{n}" for n in (0, 1, 2, 3, 4, 5, 7)] + [f"{RUN}-1-{n}" for n in (0, 1)]
    write_log(tmp_path, *(like(i, "u1", "i1") for i in ids))

    findings, _ = read_log(tmp_path, RUN, {0: client_report(2, [0, 1]), 1: client_report(1, [])})

    assert findings["acked"] == 8
    assert findings["lost"] == 1
    assert findings["lost_examples"] == [f"{RUN}-0-6"]
    assert findings["logged_not_acked"] == 2
    assert findings["in_log_twice"] == 0
    assert findings["seq_gaps"] == 0
    assert findings["idempotency"]["missing"] == 1  # the lost id
    assert findings["idempotency"]["checked"] == 8


def test_the_expected_state_resets_an_item_s_counters_at_its_removal(tmp_path: Path) -> None:
    write_log(
        tmp_path,
        ItemUpserted(id="up-1", item="i1", ts=1.7e9, kind="pro"),
        like(f"{RUN}-0-0", "u1", "i1"),
        like(f"{RUN}-0-1", "u2", "i1", "view"),
        ItemRemoved(id="rm-1", item="i1", ts=1.7e9),
        like(f"{RUN}-0-2", "u1", "i1", "view"),
        like(f"{RUN}-0-3", "u1", "i2"),
        like("other-run-1", "u3", "i2"),
    )

    findings, expect = read_log(tmp_path, RUN, {0: client_report(1, [0])})

    assert findings["lost"] == 0
    assert findings["other_interactions"] == 1
    assert findings["by_type"] == {"InteractionRecorded": 5, "ItemRemoved": 1, "ItemUpserted": 1}
    assert expect.users == {
        "u1": Counter(like=2, view=1),
        "u2": Counter(view=1),
        "u3": Counter(like=1),
    }
    assert expect.items["i1"].counters == Counter(view=1)
    assert not expect.items["i1"].exists
    assert expect.items["i2"].counters == Counter(like=2)
    assert expect.last_seq == 7


class FakeServer:
    """Answers get_user / get_item from fixed counters, like a server would."""

    def __init__(self, users: Mapping[str, Any], items: Mapping[str, Any]) -> None:
        self.users, self.items = users, items

    def call_many(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        out: list[Any] = []
        for method, params in calls:
            table = self.users if method == "get_user" else self.items
            found = table.get(params["id"])
            out.append(NotFound("no such entity") if found is None else found)
        return out

    def call(self, method: str) -> dict[str, Any]:
        assert method == "stats"
        return {"log_seq": 7}


def test_counters_above_the_log_are_applied_twice_and_below_missing(tmp_path: Path) -> None:
    write_log(
        tmp_path,
        ItemUpserted(id="up-1", item="i1", ts=1.7e9),
        like(f"{RUN}-0-0", "u1", "i1"),
        like(f"{RUN}-0-1", "u1", "i1"),
        like(f"{RUN}-0-2", "u2", "i1", "view"),
    )
    _, expect = read_log(tmp_path, RUN, {0: client_report(1, [0])})
    server = FakeServer(
        # u1: one like too many; u2: its view missing
        users={"u1": {"counters": {"like": 3}}, "u2": {"counters": {}}},
        items={"i1": {"counters": {"like": 2, "view": 1}, "exists": True}},
    )

    state = compare_state(cast(Client, server), expect, ["i1", "i9"])

    assert state["applied_twice"] == 1
    assert state["missing_from_state"] == 1
    assert (state["entities_over"], state["entities_under"]) == (1, 1)
    assert state["users_checked"] == 2
    assert state["items_checked"] == 2  # i9: in the catalogue, not in the log, not found: fine
    assert state["items_exists_wrong"] == 0
    assert not state["log_seq_matches"]  # the fake says 7, the log has 4
    assert {e["id"] for e in state["examples"]} == {"u1", "u2"}
