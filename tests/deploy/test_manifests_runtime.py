"""How deploy/ runs the server: stop timeouts above the drain, the image, the StatefulSet,
the kustomization and the systemd unit; and every package in the distribution."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import (
    DEPLOY,
    DOCKER_STOP_TIMEOUT_S,
    K8S,
    PORT,
    PROGRAM,
    REPO_ROOT,
    SYSTEMD_PROGRAM,
    compose,
    container,
    docker,
    docker_stages,
    k8s,
    parse,
    pod_spec,
    seconds,
    serve_args,
    statefulset,
    systemd_unit,
)


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
