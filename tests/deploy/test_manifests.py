"""deploy/ checked without Docker or a cluster: every file parses, and the ports, paths,
flags, environment variables and examples agree with each other and with the real CLI.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import io
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from matchlight import cli
from matchlight.cli import health
from ranker import load_surfaces

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"

PORT = 7420
DATA = "/var/lib/matchlight"
PROGRAM = "matchlight"
SYSTEMD_PROGRAM = "/opt/matchlight/venv/bin/matchlight"
ROLES = frozenset({"read", "ingest", "admin"})
MIN_TOKEN_LENGTH = 16
OTEL_VARIABLES = frozenset(
    {
        "OTEL_SERVICE_NAME",
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    }
)
OTEL_EXPORTERS = frozenset({"console", "otlp", "none"})
OTLP_HTTP_PORT = 4318
OTLP_GRPC_PORT = 4317
#: `docker stop` waits this long before SIGKILL unless told otherwise.
DOCKER_STOP_TIMEOUT_S = 10
POD_LABEL = "app.kubernetes.io/name"


# -- reading the files ------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` per instruction, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def docker(keyword: str) -> list[str]:
    return [rest for name, rest in dockerfile() if name == keyword]


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list), f"not exec (JSON array) form: {text}"
    assert all(isinstance(word, str) for word in value), text
    return value


def docker_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for name, rest in dockerfile():
        if name == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((name, rest))
    return stages


def docker_healthcheck() -> list[str]:
    (healthcheck,) = docker("HEALTHCHECK")
    _options, sep, command = healthcheck.partition(" CMD ")
    assert sep, f"HEALTHCHECK without CMD: {healthcheck}"
    return exec_form(command)


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def collector() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    return document


def k8s(kind: str, name: str) -> dict[str, Any]:
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            meta = document.get("metadata", {})
            if document.get("kind") == kind and meta.get("name") == name:
                assert "namespace" not in meta, f"{path.name}: manifests are namespace-free"
                found: dict[str, Any] = document
                return found
    raise AssertionError(f"no {kind} {name} in deploy/k8s")


def statefulset() -> dict[str, Any]:
    return k8s("StatefulSet", "matchlight")


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = statefulset()["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    found: dict[str, Any] = only
    return found


def systemd_unit() -> configparser.RawConfigParser:
    unit = configparser.RawConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string((DEPLOY / "matchlight.service").read_text())
    return unit


def systemd_values(key: str) -> list[str]:
    """Every ``key=`` line of [Service] (configparser keeps only the last of repeated keys)."""
    values: list[str] = []
    section = ""
    for raw in (DEPLOY / "matchlight.service").read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line.startswith(f"{key}="):
            values.append(line.partition("=")[2])
    return values


def token_lines(text: str) -> list[tuple[str, str]]:
    """The ``ROLE TOKEN`` lines of a tokens file (blank lines and ``#`` comments skipped)."""
    pairs = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        assert len(fields) == 2, f"line {number}: expected 'ROLE TOKEN', got {line!r}"
        pairs.append((fields[0], fields[1]))
    return pairs


def readme_commands() -> list[list[str]]:
    """``matchlight ...`` lines of deploy/README.md's indented code blocks."""
    commands = []
    for raw in (DEPLOY / "README.md").read_text().splitlines():
        if raw.startswith("    ") and raw.strip().startswith(f"{PROGRAM} "):
            commands.append(shlex.split(raw.strip()))
    return commands


# -- every `matchlight ...` command line ------------------------------------------------


def command_lines() -> Iterator[tuple[str, list[str]]]:
    """``(where, argv)`` for each command line the deploy files run, program first."""
    (entrypoint,) = docker("ENTRYPOINT")
    (cmd,) = docker("CMD")
    yield "Dockerfile CMD", exec_form(entrypoint) + exec_form(cmd)
    yield "Dockerfile HEALTHCHECK", docker_healthcheck()

    service = compose()["services"]["matchlight"]
    yield "compose command", exec_form(entrypoint) + list(service.get("command", exec_form(cmd)))
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", "compose healthcheck: exec form ['CMD', ...]"
    yield "compose healthcheck", list(test[1:])

    spec = container()
    yield "k8s args", list(spec.get("command", exec_form(entrypoint))) + list(spec["args"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        yield f"k8s {probe}", list(spec[probe]["exec"]["command"])

    (exec_start,) = systemd_values("ExecStart")
    yield "systemd ExecStart", shlex.split(exec_start)

    for n, argv in enumerate(readme_commands()):
        yield f"README command {n}", argv


COMMAND_LINES = dict(command_lines())


def cli_parser() -> argparse.ArgumentParser:
    """The real ``matchlight`` parser, with ``health`` added if cli.py does not wire it yet."""
    parser = cli.build_parser()
    subcommands = _subcommands(parser)
    if "health" not in subcommands.choices:
        health.add_parser(subcommands)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise AssertionError("the matchlight parser has no subcommands")


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` (program name first) as ``matchlight`` would, or fail saying why."""
    program, *args = argv
    assert program in (PROGRAM, SYSTEMD_PROGRAM), f"not a matchlight command: {argv}"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return cli_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`{shlex.join(argv)}` does not parse:\n{errors.getvalue()}")


def serve_args(where: str) -> argparse.Namespace:
    args = parse(COMMAND_LINES[where])
    assert args.command == "serve", where
    return args


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def seconds(duration: str | int) -> float:
    """A compose duration (``30s``, ``1m30s``) or a number of seconds."""
    if isinstance(duration, int):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert duration, "empty duration"
    assert parts is not None, f"unexpected duration {duration!r}"
    minutes, secs = (int(part or 0) for part in parts.groups())
    return 60.0 * minutes + secs


# -- the tests --------------------------------------------------------------------------


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

    assert args.func is health.main
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


def test_opentelemetry_is_configured_only_by_the_supported_variables() -> None:
    environments = {
        "Dockerfile": _docker_env(),
        "compose": dict(compose()["services"]["matchlight"]["environment"]),
        "k8s": {e["name"]: e["value"] for e in container()["env"]},
        "systemd": dict(v.partition("=")[::2] for v in systemd_values("Environment")),
    }
    for where, env in environments.items():
        otel = {name: value for name, value in env.items() if name.startswith("OTEL_")}
        assert set(otel) <= OTEL_VARIABLES, where
        assert otel["OTEL_SERVICE_NAME"] == "matchlight", where
        for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"):
            assert otel[name] in OTEL_EXPORTERS, f"{where} {name}"
        if "otlp" in (otel["OTEL_TRACES_EXPORTER"], otel["OTEL_METRICS_EXPORTER"]):
            assert otel["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf", where
            endpoint = urlsplit(otel["OTEL_EXPORTER_OTLP_ENDPOINT"])
            assert endpoint.scheme == "http", where
            assert endpoint.port == OTLP_HTTP_PORT, f"{where}: OTLP/HTTP is port 4318"
            assert endpoint.path in ("", "/"), f"{where}: the SDK appends /v1/traces itself"


def _docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    runtime = docker_stages()[-1]
    for rest in (rest for name, rest in runtime if name == "ENV"):
        for word in shlex.split(rest):
            name, sep, value = word.partition("=")
            assert sep, f"ENV in NAME=VALUE form: {word}"
            env[name] = value
    return env


def test_the_compose_otlp_endpoint_is_the_collector_which_forwards_to_jaeger() -> None:
    services = compose()["services"]
    endpoint = urlsplit(services["matchlight"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname in services
    assert endpoint.hostname == "otel-collector"
    assert "otel-collector" in services["matchlight"]["depends_on"]

    # The collector reads deploy/otel-collector.yaml ...
    otel = services["otel-collector"]
    assert otel["image"].startswith("otel/opentelemetry-collector-contrib:")
    (mount,) = otel["volumes"]
    source, target, *_ = mount.split(":")
    assert (DEPLOY / source).resolve() == DEPLOY / "otel-collector.yaml"
    assert otel["command"] == [f"--config={target}"]

    # ... which receives OTLP on the port the server sends to, and on gRPC ...
    config = collector()
    protocols = config["receivers"]["otlp"]["protocols"]
    assert host_port(protocols["http"]["endpoint"]) == ("0.0.0.0", endpoint.port)
    assert host_port(protocols["grpc"]["endpoint"]) == ("0.0.0.0", OTLP_GRPC_PORT)
    assert str(endpoint.port) in otel["expose"]

    # ... and exports traces to Jaeger's OTLP/gRPC receiver, and to its own log.
    jaeger_exporter = config["exporters"]["otlp/jaeger"]
    jaeger_host, jaeger_port = host_port(jaeger_exporter["endpoint"])
    assert jaeger_host in services
    assert jaeger_port == OTLP_GRPC_PORT
    assert jaeger_exporter["tls"]["insecure"] is True
    jaeger = services[jaeger_host]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "127.0.0.1:16686:16686" in jaeger["ports"]
    traces = config["service"]["pipelines"]["traces"]
    assert set(traces["exporters"]) == {"otlp/jaeger", "debug"}


def test_every_collector_pipeline_uses_defined_components() -> None:
    config = collector()
    for name, pipeline in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"pipeline {name}: {kind} {component}"
        assert pipeline["receivers"], name
        assert pipeline["exporters"], name


def test_each_stop_timeout_exceeds_the_drain() -> None:
    docker_drain = serve_args("Dockerfile CMD").drain
    assert docker("STOPSIGNAL") == ["SIGTERM"]
    assert docker_drain < DOCKER_STOP_TIMEOUT_S

    service = compose()["services"]["matchlight"]
    assert service["stop_signal"] == "SIGTERM"
    assert serve_args("compose command").drain < seconds(service["stop_grace_period"])

    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert serve_args("k8s args").drain < grace

    unit = systemd_unit()["Service"]
    assert unit["KillSignal"] == "SIGTERM"
    assert serve_args("systemd ExecStart").drain < seconds(int(unit["TimeoutStopSec"]))


def test_the_image_builds_every_package_in_a_builder_and_runs_unprivileged() -> None:
    builder, runtime = docker_stages()
    assert builder[0] == ("FROM", "python:3.11-slim AS builder")
    assert "build-essential" in " ".join(rest for name, rest in builder if name == "RUN")
    assert any(name == "RUN" and "pip install ." in rest for name, rest in builder)
    copied = {
        source
        for name, rest in builder
        if name == "COPY"
        for source in rest.split()[:-1]  # COPY SOURCE... DEST
    }
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    # A subpackage (matchlight.client) comes with its top-level package's directory.
    needed = {name.split(".")[0] for name in pyproject["tool"]["setuptools"]["packages"]} | {
        "pyproject.toml",
        pyproject["project"]["readme"],
    }
    assert needed <= copied, f"the builder does not copy {sorted(needed - copied)}"
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for path in needed:
        assert f"!{path}" in ignored or f"!{path}/" in ignored, f"{path} left out of the context"

    assert runtime[0] == ("FROM", "python:3.11-slim")
    assert ("COPY", "--from=builder /opt/matchlight/venv /opt/matchlight/venv") in runtime
    assert "build-essential" not in " ".join(rest for _, rest in runtime)
    (user,) = [rest for name, rest in runtime if name == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert pod_spec()["securityContext"]["runAsUser"] == int(user.split(":")[0])
    assert docker("ENTRYPOINT") == [json.dumps([PROGRAM])]


def test_the_statefulset_runs_one_probed_unprivileged_replica_behind_its_services() -> None:
    spec = statefulset()["spec"]
    assert spec["replicas"] == 1
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == labels

    governing = k8s("Service", spec["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    for name in ("matchlight", spec["serviceName"]):
        selector = k8s("Service", name)["spec"]["selector"]
        assert selector.items() <= labels.items(), name

    probes = container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        argv = probes[probe]["exec"]["command"]
        args = parse(argv)
        assert args.command == "health"
        # The probe's own timeout must leave the health client time to give up first.
        assert args.timeout < probes[probe]["timeoutSeconds"], probe

    security = container()["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert pod_spec()["securityContext"]["runAsNonRoot"] is True


def test_the_kustomization_lists_existing_manifests_but_not_the_example_secret() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]

    assert all((K8S / resource).is_file() for resource in resources)
    assert "secret.example.yaml" not in resources
    assert {"statefulset.yaml", "service.yaml", "configmap.yaml"} <= set(resources)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    built = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout)}
    assert built == {
        ("ConfigMap", "matchlight-surfaces"),
        ("Service", "matchlight"),
        ("Service", "matchlight-headless"),
        ("StatefulSet", "matchlight"),
    }


def test_the_systemd_unit_has_the_required_settings() -> None:
    unit = systemd_unit()
    service = unit["Service"]

    assert service["Type"] == "simple"
    assert service["User"] == "matchlight"
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert shlex.split(service["ExecStart"])[0] == SYSTEMD_PROGRAM
    assert serve_args("systemd ExecStart").listen == f"127.0.0.1:{PORT}"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_finds_nothing_wrong_with_the_unit(tmp_path: Path) -> None:
    true = shutil.which("true")
    assert true is not None
    # The venv is not installed here: point ExecStart at an executable that exists.
    text = (DEPLOY / "matchlight.service").read_text()
    unit = tmp_path / "matchlight.service"
    unit.write_text(text.replace(f"ExecStart={SYSTEMD_PROGRAM} ", f"ExecStart={true} "))

    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Only complaints about this unit count (containers may add unrelated noise).
    complaints = [line for line in result.stderr.splitlines() if str(unit) in line]
    assert not complaints, result.stderr


def test_every_python_package_in_the_tree_is_in_the_distribution() -> None:
    """A subpackage missing from pyproject's list would be missing from the image's install."""
    listed = set(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for top in {name.split(".")[0] for name in listed}
        for init in (REPO_ROOT / top).rglob("__init__.py")
    }
    assert found == listed
