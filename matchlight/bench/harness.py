"""What the benchmarks, the demo and the system tests share: one copy of each.

- :func:`matchlight_command`: the argv of any ``matchlight`` command run as a subprocess;
- :func:`start_server` runs ``python -m matchlight.cli serve`` as a subprocess,
  waits (bounded) for its ``matchlight listening on ADDRESS`` line and returns
  a :class:`RunningServer`, which stops it with a signal and waits;
- :func:`percentiles` and :func:`latency_summary`: the latency figures every
  bench prints (numpy's linear interpolation, or nearest rank on request);
- :func:`zipf_cum`: cumulative Zipf weights for ``random.choices``;
- :class:`IngestConnection`: a raw msgpack-RPC socket that keeps up to
  ``depth`` ``ingest`` calls in flight (pipelining), which :class:`Client`
  cannot, so that a load generator measures the server, not its own waits;
- :func:`collect`: the messages of client processes, failing fast if one dies.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import msgpack
import numpy as np

#: How long :func:`start_server` waits for the ``listening`` line unless told otherwise.
START_TIMEOUT_S: Final = 120.0
#: How long :meth:`RunningServer.stop` waits for the process to exit unless told otherwise.
STOP_TIMEOUT_S: Final = 60.0
READY: Final = re.compile(rb"matchlight listening on (\S+)")


# -- the server process ------------------------------------------------------------------------


class ServerFailed(RuntimeError):
    """The server did not start, or did not exit when told to.

    ``code`` is the exit code of the (now ended) process, ``None`` if unknown.
    """

    def __init__(self, why: str, code: int | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.code = code


def matchlight_command(
    *args: str, log_level: str | None = None, log_format: str | None = None
) -> list[str]:
    """The argv of ``matchlight [--log-level L] [--log-format F] ARGS`` in this interpreter
    (``python -m matchlight.cli``, so it runs from a checkout without an installed script)."""
    level = ["--log-level", log_level] if log_level is not None else []
    form = ["--log-format", log_format] if log_format is not None else []
    return [sys.executable, "-m", "matchlight.cli", *level, *form, *args]


def process_stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, …); ``None``
    if the process is gone (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return stat.rsplit(")", 1)[1].split()


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux: read from ``/proc``)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = process_stat(entry.name)
            if fields is not None and int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


class RunningServer:
    """One ``matchlight serve`` process that printed its ``listening`` line.

    ``address`` is what it printed (``HOST:PORT`` or ``unix:PATH``);
    ``early_output`` is whatever stdout held after that line at startup (a
    server prints nothing more until it stops); after :meth:`stop`,
    ``stdout_after_ready`` is everything it printed after the line.
    """

    def __init__(self, proc: subprocess.Popen[bytes], address: str, early_output: bytes) -> None:
        self.proc = proc
        self.address = address
        self.early_output = early_output
        self.stdout_after_ready = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        """The TCP port of a ``HOST:PORT`` address."""
        return int(self.address.rsplit(":", 1)[1])

    def poll(self) -> int | None:
        """The exit code if the process ended, else None."""
        return self.proc.poll()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig`` (if it still runs) and wait for the exit; its exit code.

        Raises ServerFailed (after a SIGKILL) if it did not exit within ``timeout``.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=timeout)
            self._close_stdout()
            raise ServerFailed(
                f"the server did not exit within {timeout:g} s of {sig.name}", code
            ) from None
        self._close_stdout()
        return code

    def kill(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGKILL the process and its workers (``--workers N``) at once, and wait for the
        process to be gone; its exit code."""
        workers = children_of(self.proc.pid) if self.proc.poll() is None else []
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return self.stop(signal.SIGKILL, timeout)

    def _close_stdout(self) -> None:
        stdout = self.proc.stdout
        if stdout is not None and not stdout.closed:
            self.stdout_after_ready = self.early_output + stdout.read()
            stdout.close()


def start_server(
    data: Path,
    *args: str,
    listen: str = "127.0.0.1:0",
    log_level: str | None = None,
    log_format: str | None = None,
    stderr: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = START_TIMEOUT_S,
) -> RunningServer:
    """Start ``matchlight serve`` on ``data`` and wait for its ``listening`` line.

    ``args`` are extra ``serve`` flags, ``log_level`` and ``log_format`` the
    ``matchlight`` options of those names; ``stderr`` a file for the server's
    log (``None``: ours). Raises ServerFailed, after killing the process, if it
    exits or says nothing else within ``timeout`` seconds.
    """
    command = matchlight_command(
        "serve",
        "--data",
        str(data),
        "--listen",
        listen,
        *args,
        log_level=log_level,
        log_format=log_format,
    )
    with open(stderr, "wb") if stderr is not None else contextlib.nullcontext() as err:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    try:
        line, rest = _ready_line(proc, time.monotonic() + timeout, timeout)
        match = READY.fullmatch(line)
        if match is None:
            raise ServerFailed(f"unexpected first stdout line {line!r}")
    except ServerFailed as failed:
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(timeout=STOP_TIMEOUT_S)
        assert proc.stdout is not None
        proc.stdout.close()
        raise ServerFailed(failed.why, code) from None
    return RunningServer(proc, match.group(1).decode(), rest)


def _ready_line(
    proc: subprocess.Popen[bytes], deadline: float, timeout: float
) -> tuple[bytes, bytes]:
    """The first stdout line and what followed it; raises ServerFailed at ``deadline`` or EOF."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerFailed(f"no 'listening' line within {timeout:g} s")
            if not selector.select(timeout=remaining):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise ServerFailed(f"server exited before listening (stdout so far {buffer!r})")
            buffer += chunk
    line, _, rest = buffer.partition(b"\n")
    return line, rest


# -- figures -----------------------------------------------------------------------------------

#: The statistics :func:`latency_summary` knows, by the name its keys start with.
_QUANTILES: Final = {"p50": 50.0, "p99": 99.0, "p999": 99.9}


def percentiles(
    samples: Sequence[float] | np.ndarray, qs: Sequence[float], *, nearest_rank: bool = False
) -> list[float]:
    """The ``qs`` percentiles (0-100) of ``samples``.

    numpy's default linear interpolation, or with ``nearest_rank`` the smallest
    sample with at least ``q`` % of the samples at or below it (always a sample).
    """
    values = np.asarray(samples, dtype=np.float64)
    if nearest_rank:
        return [float(v) for v in np.percentile(values, list(qs), method="inverted_cdf")]
    return [float(v) for v in np.percentile(values, list(qs))]


def latency_summary(
    samples: Sequence[float],
    *,
    stats: Sequence[str] = ("p50", "p99", "p999", "max", "mean"),
    scale: float = 1000.0,
    unit: str = "ms",
    digits: int = 3,
) -> dict[str, float]:
    """``{"p50_ms": ..., ...}``: ``stats`` of ``samples`` times ``scale``, rounded to ``digits``.

    ``stats`` are ``p50``, ``p99``, ``p999``, ``max`` and ``mean``; keys are
    ``STAT_UNIT`` (just ``STAT`` if ``unit`` is empty). The samples are scaled
    before the figures are taken, so they come out as the benches always printed them.
    """
    values = np.asarray(samples, dtype=np.float64) * scale
    suffix = f"_{unit}" if unit else ""
    return {f"{stat}{suffix}": round(_figure(values, stat), digits) for stat in stats}


def _figure(values: np.ndarray, stat: str) -> float:
    if stat == "max":
        return float(values.max())
    if stat == "mean":
        return float(values.mean())
    return percentiles(values, (_QUANTILES[stat],))[0]


def zipf_cum(n: int, s: float) -> list[float]:
    """Cumulative Zipf weights ``1 / (rank + 1) ** s`` over ranks ``0..n-1``.

    For ``random.choices(range(n), cum_weights=...)``, which draws exactly as
    with the plain weights but without adding them up at every call.
    """
    return list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(n)))


# -- the pipelined ingest client ---------------------------------------------------------------


def pack_ingest(msgid: int, events: list[dict[str, Any]]) -> bytes:
    """One msgpack-RPC ``ingest`` request of ``events``, ready to send."""
    packed: bytes = msgpack.packb([0, msgid, "ingest", [{"events": events}]])
    return packed


class IngestConnection:
    """A TCP connection that keeps up to ``depth`` ``ingest`` calls in flight.

    A raw socket rather than :class:`Client`, which waits for each answer
    before it sends the next call.
    """

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._unpacker = msgpack.Unpacker(raw=False)

    def pipeline(
        self,
        calls: Iterator[bytes],
        depth: int,
        stop: Callable[[], bool] = lambda: False,
        latencies: list[float] | None = None,
    ) -> tuple[int, int]:
        """Send every call (until ``stop()`` is true), ``depth`` at most unanswered.

        Returns (events accepted, calls answered) once every sent call is
        answered; appends each call's seconds from sent to answered to
        ``latencies`` if given (answers come in order). Raises RuntimeError if
        the server closes the connection or answers a call with an error.
        """
        sent = acked = accepted = 0
        sent_at: collections.deque[float] = collections.deque()
        more = True
        while more or acked < sent:
            while more and sent - acked < depth:
                call = None if stop() else next(calls, None)
                if call is None:
                    more = False
                    break
                sent_at.append(time.perf_counter())
                self._sock.sendall(call)
                sent += 1
            if acked == sent:
                break
            data = self._sock.recv(1 << 16)
            if not data:
                raise RuntimeError("the server closed the connection")
            self._unpacker.feed(data)
            for _, _, error, result in self._unpacker:
                if error is not None:
                    raise RuntimeError(f"ingest failed: {error}")
                accepted += result["accepted"]
                acked += 1
                began = sent_at.popleft()
                if latencies is not None:
                    latencies.append(time.perf_counter() - began)
        return accepted, acked

    def close(self) -> None:
        self._sock.close()


# -- client processes --------------------------------------------------------------------------


def collect(results: Any, count: int, procs: Sequence[Any], wait_s: float) -> list[Any]:
    """The next ``count`` messages client processes ``procs`` put on the queue ``results``.

    Raises RuntimeError if one of them fails first, or they do not all come within ``wait_s``.
    """
    out: list[Any] = []
    deadline = time.monotonic() + wait_s
    while len(out) < count:
        try:
            out.append(results.get(timeout=0.5))
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"a client process failed (exit code {failed[0]})") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"no word from the clients within {wait_s:g} s") from None
    return out
