"""The writer's commit bell wakes the readers' followers (matchlight.server.commit_bell)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import trio
import trio.testing

from matchlight.server.commit_bell import Bell, BellListener, bell_path


async def test_rings_wake_each_listening_reader_once_per_burst(tmp_path: Path) -> None:
    listeners = [BellListener(bell_path(tmp_path, r)) for r in (1, 2)]
    bell = Bell([bell_path(tmp_path, r) for r in (1, 2, 3)])  # reader 3 is not up
    wakes = [0, 0]

    def waker(i: int) -> Callable[[], None]:
        def wake() -> None:
            wakes[i] += 1

        return wake

    async with trio.open_nursery() as nursery:
        for i, listener in enumerate(listeners):
            nursery.start_soon(listener.run, waker(i))
        await trio.testing.wait_all_tasks_blocked()
        assert wakes == [0, 0]
        bell.ring()
        await trio.testing.wait_all_tasks_blocked()
        assert wakes == [1, 1]
        for _ in range(50):  # while the readers are busy: drained together
            bell.ring()
        await trio.testing.wait_all_tasks_blocked()
        assert wakes == [2, 2]
        nursery.cancel_scope.cancel()
    bell.close()
    for listener in listeners:
        listener.close()
    assert not os.listdir(tmp_path)  # a closed listener leaves no socket file


async def test_a_full_queue_or_a_missing_reader_never_blocks_or_raises(tmp_path: Path) -> None:
    listener = BellListener(bell_path(tmp_path, 1))
    bell = Bell([bell_path(tmp_path, 1), tmp_path / "nobody.bell"])
    for _ in range(10_000):  # far past the datagram queue's length; nobody reads
        bell.ring()
    wakes: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.run, lambda: wakes.append(1))
        await trio.testing.wait_all_tasks_blocked()
        assert wakes  # what queued wakes it
        nursery.cancel_scope.cancel()
    listener.close()
    bell.close()


async def test_a_listener_replaces_the_socket_its_previous_process_left(tmp_path: Path) -> None:
    path = bell_path(tmp_path, 1)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))
    stale.close()  # a killed reader leaves the file behind
    listener = BellListener(path)
    bell = Bell([path])
    bell.ring()
    woken = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.run, woken.set)
        with trio.fail_after(5):
            await woken.wait()
        nursery.cancel_scope.cancel()
    bell.close()
    listener.close()
