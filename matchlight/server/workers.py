"""``matchlight serve --workers N``: a supervisor and its worker processes on one node.

Python runs one thread of Python at a time, so one process cannot apply a
stream of writes and answer reads in a few milliseconds at once: a read that
arrives during a 1,000-event ingest waits for it. With ``--workers N`` the node
is N processes over one data directory (see :mod:`.worker_roles`): one writer,
which owns the event log, and N - 1 readers, which keep projections that
follow it and answer every request. LMDB lets one process write while others
read, and readers never block the writer.

The supervisor (this module, the process the operator started):

- takes the data-directory lock and lends it to the writer (the writer
  inherits the lock's descriptor, so the lock is free only when both are
  gone: no second writer, even while a crashed writer is being replaced);
- listens on the public address itself and hands each connection to the
  reader with the fewest open (see :mod:`.handover`). Clients see one server
  at one address, and connections wait in the backlog while no reader is up;
- binds the writer's unix socket (``DIR/run/writer.sock``) once, so readers'
  forwarded writes wait in its backlog while the writer restarts;
- starts the workers together (the writer first if the event store is new,
  since it creates it), and prints ``matchlight listening on ADDRESS`` when
  all are ready; restarts a worker that dies (after a short,
  growing pause if it keeps dying); workers exit at once when it dies
  (:func:`~.worker_roles.exit_with_parent`), ``kill -9`` included;
- on SIGTERM or SIGINT stops the readers first (each drains its requests),
  then the writer (which commits what is queued), and exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs
import trio

from actors import DirectoryLock, MatchlightError
from matchlight.server.config import ServeConfig
from matchlight.server.handover import HandOver, channel_pair
from matchlight.server.logs import WORKER_VARIABLE
from matchlight.server.sockets import bind_public, bind_writer_socket
from matchlight.server.worker_figures import SUPERVISOR_FILE, write_figures
from matchlight.server.worker_roles import WorkerRole
from ranker import keep_config

log = logging.getLogger(__name__)

#: A worker that dies sooner than this after starting waits longer before the next try.
STEADY_S: Final = 10.0
FIRST_PAUSE_S: Final = 0.2
MAX_PAUSE_S: Final = 5.0
#: How long a worker may take to stop after SIGTERM beyond the drain time, before SIGKILL.
STOP_GRACE_S: Final = 30.0


class WorkerFailed(MatchlightError):
    """A worker exited before it was ready when the server started: the message is why, as
    it said (see :meth:`~.worker_roles.WorkerRole.say_failed`); ``code`` its exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@attrs.define(eq=False)
class _Worker:
    kind: str
    id: int
    #: The writer's inherited listening socket (readers are handed their connections).
    listen_fd: int | None = None
    process: trio.Process | None = None
    restarts: int = 0
    #: Why it could not start, as it said (empty if it exited without a word).
    failure: str = ""

    @property
    def name(self) -> str:
        return "writer" if self.kind == "writer" else f"reader-{self.id}"


class Supervisor:
    """Starts, watches and stops the workers of one node (see the module docstring)."""

    def __init__(
        self,
        config: ServeConfig,
        argv: Sequence[str],
        *,
        workers: int,
        lock: DirectoryLock,
        public: socket.socket,
        writer_fd: int,
        writer_socket: str,
    ) -> None:
        """``public``: the listening socket of the address clients use."""
        self.config = config
        self.argv = list(argv)
        self.lock = lock
        self.writer_socket = writer_socket
        self.workers = [_Worker("writer", 0, listen_fd=writer_fd)] + [
            _Worker("reader", i) for i in range(1, workers)
        ]
        self.handover = HandOver(public, [w.name for w in self.workers[1:]])
        self.stopping = False
        self.run_dir = Path(writer_socket).parent
        for stale in self.run_dir.glob("worker-*.json"):  # figures of an earlier run
            stale.unlink()
        self.write_restarts()

    async def start_all(self) -> None:
        """Start every worker at once (each rebuilds its state from the data directory),
        or, if the event store is new, the writer first (it creates the store); return once
        all are ready.

        On a restart the writer's catalogue loads while the readers rebuild, instead of
        before (2.0 to 2.4 s for 100,000 items after a ``kill -9`` of the bench's node with
        1.25M events in the log, four starts): readers read the store, and their
        forwarded writes wait in the writer socket's backlog meanwhile.

        Raises:
            WorkerFailed: one exited before it was ready (the first such, writer first).
        """
        failed: list[_Worker] = []

        async def start(worker: _Worker) -> None:
            if not await self._start(worker):
                failed.append(worker)

        writer, *readers = self.workers
        if not (self.config.data / "events" / "data.mdb").exists():
            await start(writer)
            starting = readers if not failed else []
        else:
            starting = self.workers
        async with trio.open_nursery() as nursery:
            for worker in starting:
                nursery.start_soon(start, worker)
        if failed:
            worker = min(failed, key=lambda w: w.id)
            assert worker.process is not None
            code = worker.process.returncode
            assert code is not None
            why = (
                worker.failure or f"the {worker.name} worker exited while starting (status {code})"
            )
            raise WorkerFailed(why, code)

    async def watch(self, nursery: trio.Nursery) -> None:
        """Restart workers that die, in ``nursery``, until :meth:`stop`."""
        for worker in self.workers:
            nursery.start_soon(self._keep_alive, worker)

    async def stop(self) -> None:
        """SIGTERM the readers and wait, then the writer; SIGKILL whoever overstays."""
        self.stopping = True
        self.handover.stop()  # new connections wait in the backlog, and are refused at exit
        readers = [w for w in self.workers if w.kind == "reader"]
        await self._stop_all(readers)
        await self._stop_all([w for w in self.workers if w.kind == "writer"])

    async def _stop_all(self, workers: list[_Worker]) -> None:
        processes = [w.process for w in workers if w.process is not None]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.config.drain_s + STOP_GRACE_S):
            for process in processes:
                await process.wait()
        for process in processes:
            if process.returncode is None:
                log.warning("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                await process.wait()

    async def _keep_alive(self, worker: _Worker) -> None:
        pause = FIRST_PAUSE_S
        while True:
            assert worker.process is not None
            started = trio.current_time()
            code = await worker.process.wait()
            if self.stopping:
                return
            log.warning("the %s worker exited (status %s); restarting it", worker.name, code)
            if trio.current_time() - started >= STEADY_S:
                pause = FIRST_PAUSE_S
            await trio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_S)
            if self.stopping:
                return
            worker.restarts += 1
            self.write_restarts()
            await self._start(worker)

    async def _start(self, worker: _Worker) -> bool:
        """Start ``worker``'s process and wait until it says it is ready; False if it exited."""
        ready_read, ready_write = os.pipe()
        channel = theirs = None
        if worker.kind == "reader":
            channel, theirs = channel_pair()
        role = WorkerRole(
            kind="writer" if worker.kind == "writer" else "reader",
            id=worker.id,
            listen_fd=worker.listen_fd,
            handover_fd=None if theirs is None else theirs.fileno(),
            writer_socket=self.writer_socket,
            ready_fd=ready_write,
            readers=len(self.workers) - 1,
        )
        fds: tuple[int, ...] = (ready_write,)
        if role.listen_fd is not None:
            fds = (*fds, role.listen_fd)
        if role.handover_fd is not None:
            fds = (*fds, role.handover_fd)
        if worker.kind == "writer":
            fds = (*fds, self.lock.fileno())
        try:
            worker.process = await trio.lowlevel.open_process(
                self._command(role),
                pass_fds=fds,
                env=_worker_environment(worker.name),
            )
        except BaseException:
            if channel is not None:
                channel.close()
            raise
        finally:
            os.close(ready_write)
            if theirs is not None:
                theirs.close()
        said = b""
        async with trio.lowlevel.FdStream(ready_read) as ready:
            while not said.endswith(b"\n"):
                chunk = await ready.receive_some()
                if not chunk:  # it exited without a word
                    break
                said += chunk
        if said != b"ready\n":
            if channel is not None:
                channel.close()
            worker.failure = said.removeprefix(b"failed ").decode(errors="replace").strip()
            await worker.process.wait()
            return False
        if channel is not None:
            self.handover.attach(worker.name, channel)
        log.info("the %s worker is ready (pid %d)", worker.name, worker.process.pid)
        return True

    def _command(self, role: WorkerRole) -> list[str]:
        spec = json.dumps(attrs.asdict(role))
        return [sys.executable, "-m", "matchlight.cli", *self.argv, "--worker-spec", spec]

    def write_restarts(self) -> None:
        """Tell the readers' ``stats`` how often each worker was restarted."""
        restarts = {w.name: w.restarts for w in self.workers}
        with contextlib.suppress(OSError):
            write_figures(
                self.run_dir / SUPERVISOR_FILE, {"pid": os.getpid(), "restarts": restarts}
            )

    def pids(self) -> dict[str, int | None]:
        return {w.name: None if w.process is None else w.process.pid for w in self.workers}


def _worker_environment(name: str) -> dict[str, str]:
    """The supervisor's environment, plus the worker's name for its logs and spans."""
    env = dict(os.environ)
    env[WORKER_VARIABLE] = name  # in its log lines and its spans' resource
    return env


async def supervise(config: ServeConfig) -> None:
    """Run the node as ``config.workers`` processes until SIGTERM or SIGINT.

    Raises:
        DirectoryLockedError: another process serves the data directory.
        OSError: the address is in use or cannot be bound.
        WorkerFailed: a worker exited while the node was starting.
    """
    lock = DirectoryLock(config.data, purpose=f"matchlight serve --listen {config.listen}")
    lock.acquire()
    try:
        public, address = bind_public(config.listen)
        writer_sock, writer_path = bind_writer_socket(config.data)
        keep_config(config.data, config.surfaces, config.config_file)
        supervisor = Supervisor(
            config,
            config.argv,
            workers=config.workers,
            lock=lock,
            public=public,
            writer_fd=writer_sock.fileno(),
            writer_socket=writer_path,
        )
        try:
            await _run(supervisor, address)
        finally:
            public.close()
            writer_sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(writer_path)
    finally:
        lock.release()
    print("matchlight stopped", file=sys.stderr, flush=True)


async def _run(supervisor: Supervisor, address: object) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.handover.run)
            try:
                await supervisor.start_all()
            except BaseException:
                with trio.CancelScope(shield=True):
                    await supervisor.stop()
                raise
            await supervisor.watch(nursery)
            print(f"matchlight listening on {address}", flush=True)
            log.info(
                "serving %s from %s with %d workers: %s",
                address,
                supervisor.config.data,
                len(supervisor.workers),
                ", ".join(f"{name} pid {pid}" for name, pid in supervisor.pids().items()),
            )
            async for signum in signals:
                log.info("received %s; stopping the workers", signal.Signals(signum).name)
                break
            await supervisor.stop()
            nursery.cancel_scope.cancel()
