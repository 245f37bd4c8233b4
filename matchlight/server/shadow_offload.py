"""Shadow work handed to a sibling reader worker, so that it takes nothing from this one.

In ``shadow`` mode a surface serves the legacy feed's list and also computes
the real-time answer, to compare the two. In one process that computation
(about a millisecond of Python) runs on the serving event loop and delays the
next request. In a node of several reader workers, :class:`ShadowOffload`
sends it to a sibling instead, over the sibling's unix socket
(``DIR/run/reader-N.sock``): the sibling follows the same log and reads the
same feed and migration state, so it computes the same answer, and records the
comparison in the shared comparison log. The serving reader only queues a
small message.

The sibling runs what it is handed as its limit of concurrent shadows allows,
and the rest waits (in its socket, then in this reader's queue). While the
sibling cannot be reached (it is starting or restarting), shadows queue too;
once the queue is full, and for requests with a ``filter`` (a parsed query is
not sent), they are computed here as in one process. A batch being sent when
the sibling dies is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import trio

from legacy_adapter import Router
from matchlight.client import open_client
from matchlight.errors import BadRequest
from matchlight.server import validation
from ranker import RecommendRequest

log = logging.getLogger(__name__)

#: Shadow requests waiting to be sent, at most; beyond it a request is shadowed locally.
QUEUE: Final = 1024
#: How long to wait before trying a sibling that could not be reached again, seconds
#: (at start, the sibling may still be rebuilding its state).
RETRY_S: Final = 0.2


class ShadowOffload:
    """Queues shadow work for the sibling reader at unix socket ``path``; :meth:`run` sends it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](QUEUE)
        self.sent = 0

    def submit(self, request: RecommendRequest, request_id: str, legacy: dict[str, Any]) -> bool:
        """Queue one shadow; False if it was not taken (a filter, or the queue is full)."""
        if request.filter is not None:
            return False
        job = {
            "request": {
                "user": request.user,
                "surface": request.surface,
                "k": request.k,
                "context": dict(request.context),
            },
            "request_id": request_id,
            "legacy": legacy,
        }
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            return False
        return True

    async def run(self) -> None:
        """Send queued shadows in batches until cancelled, reconnecting when the sibling
        restarts (what queues meanwhile waits; once the queue is full, requests are
        shadowed here)."""
        while True:
            try:
                async with open_client(unix=self.path, timeout=5.0, retries=0) as sibling:
                    while True:
                        jobs = [await self._receive.receive()]
                        while len(jobs) < 64:
                            try:
                                jobs.append(self._receive.receive_nowait())
                            except trio.WouldBlock:
                                break
                        await sibling.notify("run_shadows", {"jobs": jobs})
                        self.sent += len(jobs)
            except OSError as exc:
                log.info("shadow sibling %s not reachable (%s); retrying", self.path, exc)
            await trio.sleep(RETRY_S)


def run_shadows_handler(router: Router) -> Any:
    """The ``run_shadows`` method a reader serves on its unix socket, for its sibling."""

    async def run_shadows(params: Any) -> Mapping[str, Any]:
        jobs = validation.params_map(params).get("jobs")
        if not isinstance(jobs, list):
            raise BadRequest("jobs: expected a list")
        for job in jobs:
            if not isinstance(job, dict) or not isinstance(job.get("legacy"), dict):
                raise BadRequest("jobs: expected maps with request, request_id and legacy")
            request = validation.recommend(job.get("request") or {})
            request_id = validation.ident(job.get("request_id"), "request_id")
            await router.shadow_for_sibling(request, request_id, job["legacy"])
        return {"taken": len(jobs)}

    return run_shadows
