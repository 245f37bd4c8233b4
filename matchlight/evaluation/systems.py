"""The real-time path the replay drives: the engine in-process, or a running server over RPC.

Both implement :class:`RealtimePath`, so the protocol (:mod:`matchlight.evaluation.replay`)
is written once:

- :func:`open_in_process` — an actor system on a memory event store and a
  ranker in this process; training fits a model on the log and swaps it in.
- :func:`open_over_rpc` — a ``matchlight serve`` reached with the msgpack-RPC
  client, driven exactly as a service would: ``upsert_items``, ``ingest``,
  ``recommend``; training runs ``matchlight train --data DIR`` as a
  subprocess (when the server's data directory is given) and waits until
  ``stats`` reports the new model.

Retrieval recall: each recommend names the revealed item as its ``probe``,
and the result's ``retrieved`` says whether it was among the ranker's
candidates (:func:`retrieved`); it changes nothing served.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import trio

from actors import ActorSystem, MemoryEventStore, open_actor_system
from matchlight.address import parse_connect
from matchlight.bench.harness import matchlight_command
from matchlight.server import validation
from ranker import RankerActor, RecommendRequest, TrainingConfig, fit, open_ranker, read_log

#: The surface the real-time path is asked on (and the batch feed's lines are for).
SURFACE: Final = "default"
#: How long to wait for a server to report the model ``matchlight train`` wrote.
MODEL_WAIT_S: Final = 300.0
RPC_TIMEOUT_S: Final = 120.0

Progress = Callable[[str], None]


class ReplayServerError(Exception):
    """The server could not be reached or trained, or refused what the replay sent."""


@attrs.frozen(kw_only=True)
class Answer:
    """A real-time recommendation as the replay scores it."""

    items: list[str]
    scores: list[float]
    #: The revealed item was among the retrieved candidates (None: the ranker does not say).
    retrieved: bool | None = None
    #: Items scored for this request, if the ranker reports it.
    candidates: int | None = None


def retrieved(result: Mapping[str, Any], item: str | None) -> bool | None:
    """Whether ``item`` (the request's ``probe``) was among a recommend result's candidates;
    None if the result does not say (an older server) or nothing was probed."""
    found = result.get("retrieved")
    if item is None or type(found) is not bool:
        return None
    return found


def _answer(result: Mapping[str, Any], item: str | None) -> Answer:
    entries = result.get("items") or []
    candidates = result.get("candidates")
    return Answer(
        items=[str(e["id"]) for e in entries],
        scores=[float(e.get("score", 0.0)) for e in entries],
        retrieved=retrieved(result, item),
        candidates=candidates if isinstance(candidates, int) else None,
    )


class RealtimePath(Protocol):
    """What the protocol needs from the real-time path. Every method is a checkpoint."""

    #: ``in-process`` or ``rpc HOST:PORT``.
    @property
    def where(self) -> str: ...

    @property
    def hook_target(self) -> Any:
        """What ``on_request`` hooks receive (the actor system in-process; None over RPC)."""

    async def upsert(self, items: Sequence[Mapping[str, Any]]) -> None: ...

    async def ingest(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Returns once the events are durable and visible to ``recommend``."""

    async def train(self, say: Progress) -> dict[str, Any]:
        """Train on everything ingested so far and serve the model; return its facts."""

    async def recommend(self, user: str, k: int, *, item: str | None = None) -> Answer:
        """Top ``k`` for ``user``; ``item`` (the revealed one) only feeds the recall hook."""


# -- in-process ------------------------------------------------------------------------------


@attrs.define
class InProcess:
    """The engine in this process: actor system, memory event store, ranker."""

    system: ActorSystem
    store: MemoryEventStore
    ranker: RankerActor
    training: TrainingConfig
    where: str = "in-process"

    @property
    def hook_target(self) -> ActorSystem:
        return self.system

    async def upsert(self, items: Sequence[Mapping[str, Any]]) -> None:
        if items:
            await self.system.upsert_items(
                validation.items({"items": list(items)}, now=time.time())
            )

    async def ingest(self, events: Sequence[Mapping[str, Any]]) -> None:
        if events:
            await self.system.ingest(validation.events({"events": list(events)}))

    async def train(self, say: Progress) -> dict[str, Any]:
        data = await trio.to_thread.run_sync(read_log, self.store)
        model = await trio.to_thread.run_sync(
            lambda: fit(data, self.training, version="replay-cut", store=self.store)
        )
        await self.ranker.use_model(model)
        return dict(model.facts)

    async def recommend(self, user: str, k: int, *, item: str | None = None) -> Answer:
        got = await self.ranker.recommend(
            RecommendRequest(user=user, surface=SURFACE, k=k, probe=item)
        )
        return _answer(got.view(), item)


@contextlib.asynccontextmanager
async def open_in_process(training: TrainingConfig) -> AsyncIterator[InProcess]:
    """A fresh engine in-process for the duration of the block."""
    store = MemoryEventStore()
    async with open_actor_system(store) as system, open_ranker(system) as ranker:
        yield InProcess(system=system, store=store, ranker=ranker, training=training)


# -- over msgpack-RPC ------------------------------------------------------------------------


@attrs.define
class OverRpc:
    """A running ``matchlight serve``, driven over msgpack-RPC as a service would."""

    client: Any  # matchlight.client.AsyncClient
    where: str
    #: The server's data directory, for ``matchlight train`` (None: no training).
    server_data: Path | None
    training: TrainingConfig
    hook_target: Any = None

    async def _call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        from matchlight.client import RpcError

        try:
            return await self.client.call(method, params)
        except RpcError as exc:
            raise ReplayServerError(f"{self.where}: {method} failed: {exc}") from exc

    async def upsert(self, items: Sequence[Mapping[str, Any]]) -> None:
        if items:
            await self._call("upsert_items", {"items": list(items)})

    async def ingest(self, events: Sequence[Mapping[str, Any]]) -> None:
        if events:
            await self._call("ingest", {"events": list(events)})

    async def train(self, say: Progress) -> dict[str, Any]:
        before = (await self._call("stats")).get("model")
        if self.server_data is None:
            say(
                "no --server-data: not training; the server keeps its current ranker "
                f"({'heuristic' if before is None else 'model ' + str(before)})"
            )
            return {"trained": False, "model": before}
        started = time.monotonic()
        version = await trio.to_thread.run_sync(
            run_train, self.server_data, self.training, abandon_on_cancel=True
        )
        say(f"matchlight train wrote model {version}; waiting for the server to load it")
        with trio.move_on_after(MODEL_WAIT_S):
            # The server polls for models itself; nothing here to wait on but its answer.
            while (await self._call("stats")).get("model") != version:  # noqa: ASYNC110
                await trio.sleep(0.25)
            return {
                "trained": True,
                "model": version,
                "train_s": round(time.monotonic() - started, 1),
            }
        raise ReplayServerError(
            f"{self.where} did not load model {version} within {MODEL_WAIT_S:.0f} s: is "
            f"{self.server_data} the data directory it serves?"
        )

    async def recommend(self, user: str, k: int, *, item: str | None = None) -> Answer:
        params: dict[str, Any] = {"user": user, "surface": SURFACE, "k": k}
        if item is not None:
            params["probe"] = item
        result = await self._call("recommend", params)
        return _answer(result, item)


_MODEL_LINE: Final = re.compile(r"^model (\S+):", re.MULTILINE)


def training_flags(training: TrainingConfig) -> list[str]:
    """``matchlight train``'s flags for the replay's training settings."""
    return [
        "--epochs",
        str(training.epochs),
        "--seed",
        str(training.seed),
        "--threads",
        str(training.threads),
    ]


def run_train(data: Path, training: TrainingConfig) -> str:
    """Run ``matchlight train`` (its progress on our stderr); the version it wrote. Blocking.

    Raises:
        ReplayServerError: it failed, or did not say which model it wrote.
    """
    done = subprocess.run(
        matchlight_command("train", "--data", str(data), *training_flags(training)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        check=False,
    )
    found = _MODEL_LINE.search(done.stdout or "")
    if done.returncode != 0 or found is None:
        raise ReplayServerError(
            f"matchlight train --data {data} failed (exit {done.returncode}): "
            f"{(done.stdout or '').strip()[-500:] or 'see its messages above'}"
        )
    return found.group(1)


def parse_server(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port): a client's address (:func:`parse_connect`), TCP only.

    Raises:
        ValueError: not HOST:PORT with a port from 1 to 65535.
    """
    try:
        address = parse_connect(text)
    except ValueError:
        address = None
    if address is None or address.unix is not None:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return address.host, address.port


@contextlib.asynccontextmanager
async def open_over_rpc(
    server: str,
    training: TrainingConfig,
    *,
    server_data: Path | None = None,
    token: str | None = None,
) -> AsyncIterator[OverRpc]:
    """A connection to the server at ``server`` (``HOST:PORT``) for the block.

    Raises:
        ReplayServerError: the server cannot be reached, or is not healthy.
    """
    from matchlight.client import RpcError, open_client

    host, port = parse_server(server)
    try:
        async with open_client(host, port, timeout=RPC_TIMEOUT_S, token=token) as client:
            path = OverRpc(
                client=client,
                where=f"rpc {host}:{port}",
                server_data=server_data,
                training=training,
            )
            await path._call("health")
            yield path
    except (OSError, RpcError) as exc:
        raise ReplayServerError(f"cannot use the server at {server}: {exc}") from exc


async def nightly_lists(
    path: RealtimePath, users: Iterable[str], depth: int
) -> dict[str, tuple[list[str], list[float]]]:
    """What a nightly job makes: each user's top ``depth`` from the real-time path now.

    The same ranker and model as the real-time path, asked once per user:
    only freshness differs.
    """
    lists: dict[str, tuple[list[str], list[float]]] = {}
    for who in users:
        answer = await path.recommend(who, depth)
        lists[who] = (answer.items, answer.scores)
    return lists
