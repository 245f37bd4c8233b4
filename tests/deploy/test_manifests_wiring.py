"""deploy/ checked without Docker or a cluster: every file parses, every command line
parses with the real CLI, and the port, data directory, tokens and surfaces config agree
everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from matchlight import cli
from matchlight.cli import health
from ranker import load_surfaces
from tests.deploy.manifests import (
    COMMAND_LINES,
    DATA,
    DEPLOY,
    MIN_TOKEN_LENGTH,
    PORT,
    ROLES,
    compose,
    container,
    docker,
    host_port,
    is_loopback,
    k8s,
    parse,
    pod_spec,
    serve_args,
    statefulset,
    systemd_unit,
    token_lines,
)


@pytest.mark.parametrize(
    "path",
    sorted(DEPLOY.rglob("*.yaml")),
    ids=lambda path: str(path.relative_to(DEPLOY)),
)
def test_every_yaml_file_parses_to_mappings(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents
    assert all(isinstance(document, dict) and document for document in documents)


@pytest.mark.parametrize("where", sorted(COMMAND_LINES))
def test_every_command_line_parses_with_the_real_cli(where: str) -> None:
    args = parse(COMMAND_LINES[where])

    if args.command == "health":
        host, port = host_port(args.connect)
        assert port == PORT, where
        assert is_loopback(host), f"{where}: a probe runs beside the server, on loopback"
    else:
        assert args.command == "serve", where
        host, port = host_port(args.listen)
        assert port == PORT, where
        assert args.data == DATA, where
        if not is_loopback(host):
            # The server refuses to listen beyond loopback without tokens.
            assert args.tokens is not None, f"{where}: listens on {host} without --tokens"
            assert not args.allow_unauthenticated, where


def test_the_real_cli_offers_the_health_command() -> None:
    args = cli.build_parser().parse_args(["health"])

    assert args.func is health.run
    assert args.connect == f"127.0.0.1:{PORT}"


def test_the_port_is_7420_everywhere() -> None:
    assert docker("EXPOSE") == [str(PORT)]
    assert compose()["services"]["matchlight"]["ports"] == [f"127.0.0.1:{PORT}:{PORT}"]

    (port,) = container()["ports"]
    assert port == {"name": "msgpack-rpc", "containerPort": PORT, "protocol": "TCP"}
    for name in ("matchlight", "matchlight-headless"):
        (service_port,) = k8s("Service", name)["spec"]["ports"]
        assert service_port["name"] == "msgpack-rpc"
        assert service_port["port"] == PORT
        # A named targetPort resolves to the container port of that name.
        assert service_port["targetPort"] in (port["name"], PORT)

    probes = [argv for where, argv in COMMAND_LINES.items() if "health" in argv]
    assert len(probes) >= 5  # Docker, compose, and three Kubernetes probes
    for argv in probes:
        assert host_port(parse(argv).connect)[1] == PORT


def test_the_data_directory_is_the_same_volume_everywhere() -> None:
    assert docker("VOLUME") == [json.dumps([DATA])]
    assert serve_args("Dockerfile CMD").data == DATA
    assert DATA in " ".join(docker("RUN")), "the image creates the data dir (owned by its user)"

    assert serve_args("compose command").data == DATA
    volumes = compose()["services"]["matchlight"]["volumes"]
    assert f"matchlight-data:{DATA}" in volumes
    assert "matchlight-data" in compose()["volumes"]

    assert serve_args("k8s args").data == DATA
    (claim,) = statefulset()["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == DATA
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]

    assert serve_args("systemd ExecStart").data == DATA
    service = systemd_unit()["Service"]
    assert f"/var/lib/{service['StateDirectory']}" == DATA
    assert DATA in service["ReadWritePaths"].split()


def test_the_tokens_reach_the_server_where_serve_reads_them() -> None:
    # compose: a file secret is mounted at /run/secrets/NAME.
    service = compose()["services"]["matchlight"]
    (secret,) = service["secrets"]
    assert serve_args("compose command").tokens == f"/run/secrets/{secret}"
    assert serve_args("Dockerfile CMD").tokens == f"/run/secrets/{secret}"
    assert (DEPLOY / compose()["secrets"][secret]["file"]).is_file()

    # Kubernetes: the Secret and the ConfigMap are projected into one directory.
    args = serve_args("k8s args")
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    files: dict[str, tuple[str, str, str]] = {}
    for volume in pod_spec()["volumes"]:
        if "projected" not in volume:
            continue
        mount = mounts[volume["name"]]
        assert mount.get("readOnly") is True
        for source in volume["projected"]["sources"]:
            (kind, ref), *_ = source.items()
            for item in ref["items"]:
                path = f"{mount['mountPath']}/{item['path']}"
                files[path] = (kind, ref["name"], item["key"])
    assert files[args.tokens][0] == "secret"
    _, secret_name, secret_key = files[args.tokens]
    assert secret_key in k8s("Secret", secret_name)["stringData"]
    assert files[args.config][0] == "configMap"
    _, map_name, map_key = files[args.config]
    assert map_key in k8s("ConfigMap", map_name)["data"]

    assert serve_args("systemd ExecStart").tokens == "/etc/matchlight/tokens"


@pytest.mark.parametrize("source", ["tokens.example", "k8s/secret.example.yaml"])
def test_the_example_tokens_are_role_token_lines_marked_for_replacement(source: str) -> None:
    if source.endswith(".yaml"):
        text = k8s("Secret", "matchlight-tokens")["stringData"]["tokens"]
    else:
        text = (DEPLOY / source).read_text()
    pairs = token_lines(text)

    assert {role for role, _ in pairs} == ROLES
    tokens = [token for _, token in pairs]
    assert len(set(tokens)) == len(tokens)
    assert all(len(token) >= MIN_TOKEN_LENGTH for token in tokens)
    # Placeholders, and said so next to them.
    assert all("replace" in token for token in tokens)
    comments = [line for line in (DEPLOY / source).read_text().splitlines() if "#" in line]
    assert any("replace" in line.lower() for line in comments)


@pytest.mark.parametrize("source", ["tokens.example", "k8s/secret.example.yaml"])
def test_the_example_tokens_load_with_the_servers_parser(source: str) -> None:
    auth = pytest.importorskip("matchlight.server.auth")
    if source.endswith(".yaml"):
        text = k8s("Secret", "matchlight-tokens")["stringData"]["tokens"]
    else:
        text = (DEPLOY / source).read_text()

    assert len(auth.parse_tokens(text, source)) == 3


def test_the_surfaces_config_in_the_configmap_loads(tmp_path: Path) -> None:
    path = tmp_path / "surfaces.toml"
    path.write_text(k8s("ConfigMap", "matchlight-surfaces")["data"]["surfaces.toml"])

    surfaces = load_surfaces(path)

    assert "home" in surfaces.policies
    assert surfaces.get("home").retrieval is not None
    assert serve_args("k8s args").config == "/etc/matchlight/surfaces.toml"
