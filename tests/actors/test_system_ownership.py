"""A cluster node's actor system (``owns_user``): every event reaches the items, the index
and the co-occurrence, but only users it serves (or already active) get actors; any
other user is still rebuilt exactly from the log when asked for."""

from __future__ import annotations

from actors import MemoryEventStore, RecordInteraction, UpsertItem, open_actor_system


async def test_events_of_users_not_served_are_kept_in_the_log_and_not_activated() -> None:
    store = MemoryEventStore()
    served = {"u1"}
    async with open_actor_system(store, owns_user=served.__contains__) as system:
        await system.upsert_items([UpsertItem(event_id="up", item="i1", ts=1.0)])
        await system.ingest(
            [
                RecordInteraction(id=f"e{n}", type="view", user=f"u{n % 2 + 1}", item="i1", ts=2.0)
                for n in range(10)
            ]
        )
        assert system.users.peek("u1") is not None
        assert system.users.peek("u2") is None  # not served: no actor
        item = await system.get_item("i1")
        assert item.counters["view"] == 10  # the item counts every user's events
        # Asked for (the node took the user's partition), u2 is rebuilt from the log …
        u2 = await system.get_user("u2")
        assert u2.counters == {"view": 5}
        # … and, active now, follows its next events though still not "served".
        await system.ingest(
            [RecordInteraction(id="late", type="view", user="u2", item="i1", ts=3.0)]
        )
        assert (await system.get_user("u2")).counters == {"view": 6}
