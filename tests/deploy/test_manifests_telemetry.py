"""deploy/'s OpenTelemetry settings: only the supported variables, and compose's OTLP
endpoint is the collector, which forwards to Jaeger."""

from __future__ import annotations

import shlex
from urllib.parse import urlsplit

from tests.deploy.manifests import (
    DEPLOY,
    OTEL_EXPORTERS,
    OTEL_VARIABLES,
    OTLP_GRPC_PORT,
    OTLP_HTTP_PORT,
    collector,
    compose,
    container,
    docker_stages,
    host_port,
    systemd_values,
)


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
