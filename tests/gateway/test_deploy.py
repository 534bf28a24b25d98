"""The container and the Kubernetes manifests, checked without a Docker engine or a cluster.

The manifests are validated offline against the Kubernetes OpenAPI schemas that the
kubernetes-validate package ships, in strict mode (an unknown or misspelt field is an error),
and their security settings are asserted. The Dockerfile's build and install steps are the
two commands of ``scripts/build-wheels``, which the slow test runs for real: wheels built,
installed into a fresh venv, and the gateway started from it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from mapper_gateway import __version__
from mapper_gateway.gateway import Gateway
from mapper_gateway.settings import GatewaySettings

from .kit import MODEL_YAML, TOKEN, device_yaml, free_port, make_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "gateway" / "Dockerfile"
BUILD_WHEELS = ROOT / "scripts" / "build-wheels"
# KubeEdge 1.19-1.21 run on Kubernetes 1.29-1.31; the newest schemas catch removed fields.
K8S_VERSIONS = ("1.29.0", "1.31.0", kubernetes_validate.latest_version())
UID = 10001


def resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d)
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in resources()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = one("DaemonSet")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    containers = pod()["containers"]
    assert len(containers) == 1
    only: dict[str, Any] = containers[0]
    return only


def mount(volume: str) -> str:
    path: str = next(m["mountPath"] for m in container()["volumeMounts"] if m["name"] == volume)
    return path


def settings(tmp_path: Path) -> GatewaySettings:
    """The gateway's settings exactly as the pod reads them from its ConfigMap."""
    config = tmp_path / "gateway.yaml"
    config.write_text(one("ConfigMap", "mapper-gateway")["data"]["gateway.yaml"])
    return GatewaySettings.load(config=config)


# -- manifests ------------------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(on_disk)
    kinds = sorted(d["kind"] for d in resources())
    assert kinds == ["ConfigMap", "ConfigMap", "DaemonSet", "Namespace", "Secret"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_manifests_are_valid_kubernetes(version: str) -> None:
    for doc in resources():
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validation_does_catch_mistakes() -> None:
    daemonset = one("DaemonSet")
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError, match="runAsNonRot"):
        kubernetes_validate.validate(daemonset, K8S_VERSIONS[0], strict=True)
    daemonset = one("DaemonSet")
    daemonset["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = "1Gi"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, K8S_VERSIONS[0], strict=True)


def test_the_pod_runs_locked_down_on_edge_nodes_only() -> None:
    spec = pod()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == UID
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    security = container()["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    resources_ = container()["resources"]
    for bound in ("requests", "limits"):
        assert set(resources_[bound]) == {"cpu", "memory"}
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    keys = {e["key"] for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]}
    assert keys == {"node-role.kubernetes.io/edge"}
    hostpaths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert hostpaths == {"kubeedge": "/etc/kubeedge"}  # nothing else of the node
    assert mount("kubeedge") == "/etc/kubeedge"
    # The root filesystem is read-only: everything the gateway writes has a volume.
    writable = {m["mountPath"] for m in container()["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/etc/kubeedge", "/var/lib/mapper-gateway", "/tmp"}


def test_the_probes_and_mounts_match_the_gateway_settings(tmp_path: Path) -> None:
    gateway = settings(tmp_path)
    assert gateway.loopback_only  # the API is not on the node's network without a token
    port = container()["ports"][0]["containerPort"]
    assert port == gateway.api_port
    probes = {name: container()[name]["httpGet"] for name in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in [*probes.values(), container()["startupProbe"]["httpGet"]]:
        assert probe["port"] == gateway.api_port
        assert probe["host"] == gateway.api_host  # the pod shares the node's network
    assert pod()["hostNetwork"] is True
    assert str(gateway.devices) == mount("devices")
    assert str(gateway.state_dir) == mount("state")
    assert gateway.dmi is not None
    assert Path(gateway.dmi).parent == Path(mount("kubeedge")) == gateway.dmi_socket_dir
    env = {e["name"]: e for e in container()["env"]}
    assert env["MAPPER_GATEWAY_CONFIG"]["value"] == f"{mount('config')}/gateway.yaml"
    volumes = {v["name"]: v for v in pod()["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "mapper-gateway"
    assert volumes["devices"]["configMap"]["name"] == "mapper-gateway-devices"
    assert "emptyDir" in volumes["state"] or "hostPath" in volumes["state"]


def test_secrets_come_only_from_the_secret() -> None:
    secret = one("Secret")
    keys = set(secret["stringData"])
    assert all(value == "" for value in secret["stringData"].values()), "no real secret in git"
    env = container()["env"]
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in env
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    secret_names = {
        "MAPPER_GATEWAY_TOKEN",
        "MAPPER_MQTT_USERNAME",
        "MAPPER_MQTT_PASSWORD",
        "USERNAME",
        "PASSWORD",
        "TOKEN",
        "MAPPER_SINK_MQTT_USERNAME",
        "MAPPER_SINK_MQTT_PASSWORD",
    }
    assert secret_names <= set(from_secret)
    for name in secret_names:
        ref = from_secret[name]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in keys
        # Only the API token is required: the gateway must not start without one.
        assert ref.get("optional", False) is (name != "MAPPER_GATEWAY_TOKEN")
    for entry in env:
        if re.search(r"TOKEN|PASSWORD|SECRET", entry["name"]):
            assert "value" not in entry, f"{entry['name']} must come from the Secret"
    for configmap in (d for d in resources() if d["kind"] == "ConfigMap"):
        text = yaml.safe_dump(configmap["data"]).lower()
        assert not re.search(r"^\s*(token|password)\s*:", text, re.M)


async def test_the_configmap_devices_run_in_the_gateway(tmp_path: Path) -> None:
    devices = tmp_path / "devices"
    devices.mkdir()
    for name, text in one("ConfigMap", "mapper-gateway-devices")["data"].items():
        (devices / name).write_text(text)
    async with Gateway(make_settings(tmp_path, devices)) as gateway:
        await gateway.wait_loaded(10)
        running = {ref.id for ref in gateway.require_runtime().devices}
        assert running == {"default/thermostat-sim"}
        assert gateway.files is not None
        assert not [p for p in gateway.files.problems if p.severity == "error"]


# -- the Dockerfile -------------------------------------------------------------------------


def dockerfile() -> list[str]:
    """The instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_the_dockerfile_runs_the_steps_ci_proves() -> None:
    lines = dockerfile()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in lines
    stages = [line for line in lines if line.startswith("FROM ")]
    assert stages == ["FROM ${PYTHON_IMAGE} AS builder", "FROM ${PYTHON_IMAGE} AS runtime"]
    runs = [line for line in lines if line.startswith("RUN ")]
    assert "RUN scripts/build-wheels /wheels" in runs
    assert any("/src/scripts/build-wheels --install /wheels" in run for run in runs)
    assert "build-wheels" in (ROOT / "tests" / "gateway" / "test_deploy.py").read_text()
    runtime = lines[lines.index("FROM ${PYTHON_IMAGE} AS runtime") :]
    assert f"USER {UID}:{UID}" in runtime
    assert "EXPOSE 7777" in runtime
    assert 'ENTRYPOINT ["mapper-gateway", "run"]' in runtime
    assert 'VOLUME ["/var/lib/mapper-gateway"]' in runtime
    assert any("MAPPER_GATEWAY_STATE_DIR=/var/lib/mapper-gateway" in line for line in runtime)
    assert "ARG GATEWAY_EXTRAS=dmi" in runtime


def test_the_manifests_run_the_image_as_built() -> None:
    assert container()["image"] == f"mapper-gateway:{__version__}"
    assert pod()["securityContext"]["runAsGroup"] == UID
    assert container()["ports"][0]["containerPort"] == 7777


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_image_steps_build_and_install_a_working_gateway(tmp_path: Path) -> None:
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHON"] = sys.executable
    subprocess.run([BUILD_WHEELS, wheels], check=True, env=env, timeout=600)
    built = sorted(p.name.split("-")[0] for p in wheels.glob("*.whl"))
    assert built == ["mapper_gateway", "mapper_sdk", "mapper_sdk_modbus", "mapper_sdk_opcua"]

    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    env["PYTHON"] = str(venv / "bin" / "python")
    subprocess.run([BUILD_WHEELS, "--install", wheels], check=True, env=env, timeout=600)
    command = venv / "bin" / "mapper-gateway"
    help_text = subprocess.run(
        [command, "run", "--help"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert "--mqtt-url" in help_text
    version = subprocess.run(
        [command, "version"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert version.startswith(f"mapper-gateway {__version__}; drivers: ")
    assert {"modbus", "opcua", "virtual"} <= set(version.split("drivers: ")[1].strip().split(", "))

    # Started from the venv alone: the API, the dashboard's files from the wheel, readiness.
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "model.yaml").write_text(MODEL_YAML)
    (devices / "thermo-1.yaml").write_text(device_yaml())
    port = free_port()
    run_env = {
        **env,
        "MAPPER_GATEWAY_TOKEN": TOKEN,
        "MAPPER_GATEWAY_STATE_DIR": str(tmp_path / "state"),
    }
    args = ["run", "--devices", str(devices), "--mqtt-url", "off", "--api", f"127.0.0.1:{port}"]
    with (tmp_path / "gateway.log").open("wb") as log:
        process = subprocess.Popen(
            [command, *args], stdout=log, stderr=subprocess.STDOUT, env=run_env
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/readyz", process)
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200
        assert "static/app.js" in page.text
        assert httpx.get(f"{base}/static/app.js", timeout=10).status_code == 200
        # /docs needs no CDN: Swagger UI comes from the wheel too.
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "docs.js"):
            assert httpx.get(f"{base}/docs/assets/{asset}", timeout=10).status_code == 200
        assert (tmp_path / "state" / "audit.log").is_file()  # the audit file is opened at start
        devices_list = httpx.get(f"{base}/api/v1/devices", timeout=10).json()
        assert [d["id"] for d in devices_list["items"]] == ["default/thermo-1"]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, (tmp_path / "gateway.log").read_text()
    assert TOKEN not in (tmp_path / "gateway.log").read_text()


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until ``url`` answers 200; fail when the process exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the gateway exited"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # the interval between checks of the condition
    raise AssertionError(f"{url} not ready within {timeout} s")
