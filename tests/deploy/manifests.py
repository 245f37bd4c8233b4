"""The deploy/ files read for the manifest tests, and the real CLI that parses their command
lines: Dockerfile instructions, compose, the collector config, Kubernetes manifests, the
systemd unit, token files and README commands; every ``matchlight ...`` command line they
run; and the values they must agree on (port, data directory, roles, OTel variables).
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from matchlight import cli

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


class _CaseSensitiveParser(configparser.RawConfigParser):
    """systemd keys are case-sensitive; configparser lowercases them by default."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def systemd_unit() -> configparser.RawConfigParser:
    unit = _CaseSensitiveParser(strict=False, interpolation=None)
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


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` (program name first) as ``matchlight`` would, or fail saying why."""
    program, *args = argv
    assert program in (PROGRAM, SYSTEMD_PROGRAM), f"not a matchlight command: {argv}"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return cli.build_parser().parse_args(args)
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
