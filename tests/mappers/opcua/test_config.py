"""configData models: KubeEdge's keys and samples, float numbers, every NodeId syntax, and the
refusals that keep secrets and trust explicit. No server, and no asyncua import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mapper_opcua.config import (
    Mode,
    OpcUaProtocolConfig,
    OpcUaVisitorConfig,
    SecurityMode,
    UserIdentity,
)
from pydantic import ValidationError

from mapper_sdk.models import legacy

SAMPLES = Path(__file__).resolve().parents[4] / "shared" / "conformance" / "kubeedge" / "samples"
SECURED = {
    "url": "opc.tcp://h:4840",
    "securityPolicy": "Basic256Sha256",
    "certificate": "/c.der",
    "privateKey": "/k.pem",
}


def _sample(name: str) -> Any:
    return yaml.safe_load((SAMPLES / "v1alpha2" / name).read_text())


def test_the_kubeedge_v1alpha2_sample_is_accepted() -> None:
    import yaml

    model = legacy.model_from_v1alpha2(
        yaml.safe_load((SAMPLES / "v1alpha2/opcua-model.yaml").read_text())
    )
    doc = yaml.safe_load((SAMPLES / "v1alpha2/opcua-instance.yaml").read_text())
    device = legacy.device_from_v1alpha2(doc, model)
    config = OpcUaProtocolConfig.model_validate(device["spec"]["protocol"]["configData"])
    assert config.resolved_mode is SecurityMode.SIGN
    assert config.remote_certificate == "/ca/servercert.pem"
    assert config.password == "/ca/pass"  # a file path, as KubeEdge reads it
    assert config.resolved_identity is UserIdentity.USERNAME
    visitors = [p["visitors"]["configData"] for p in device["spec"]["properties"]]
    assert [OpcUaVisitorConfig.model_validate(v).node_id for v in visitors] == [
        "ns=2;i=2",
        "ns=2;i=3",
    ]


def test_numbers_arrive_as_floats() -> None:
    config = OpcUaProtocolConfig.model_validate(
        {"url": "opc.tcp://h:4840", "timeout": 1500.0, "maxNodesPerRead": 100.0}
    )
    assert (config.timeout, config.max_nodes_per_read) == (1500.0, 100)
    visitor = OpcUaVisitorConfig.model_validate(
        {"nodeID": "ns=2;i=3", "queueSize": 5.0, "publishingInterval": 250.0, "deadband": 0.5}
    )
    assert (visitor.queue_size, visitor.publishing_interval) == (5, 250.0)


@pytest.mark.parametrize(
    "node_id",
    [
        "i=2258",
        "ns=2;i=3",
        "ns=2;s=Boiler.Temperature",
        "ns=2;s=with;semicolons=and equals",
        "nsu=urn:plant:boiler;i=2001",
        "nsu=http://x.org/UA/;s=Name",
        "ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a",
        "ns=1;b=M/RbKBsRVkePCePcx24oRA==",
    ],
)
def test_every_node_id_syntax(node_id: str) -> None:
    assert OpcUaVisitorConfig.model_validate({"nodeID": node_id}).node_id == node_id


@pytest.mark.parametrize("bad", ["ns=2", "ns=x;i=3", "ns=2;i=abc", "2:Temperature", "g=not-a-guid"])
def test_a_bad_node_id_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="is not a NodeId"):
        OpcUaVisitorConfig.model_validate({"nodeID": bad})


def test_visitor_modes_and_data_types() -> None:
    visitor = OpcUaVisitorConfig.model_validate(
        {"browseName": "2:Boiler/2:Temp", "mode": "Subscribe", "dataType": "int16"}
    )
    assert (visitor.mode, visitor.wire_type) == (Mode.SUBSCRIBE, "Int16")
    assert OpcUaVisitorConfig.model_validate({"nodeID": "i=1", "dataType": "int"}).wire_type is None
    with pytest.raises(ValidationError, match=r"nodeID .* or browseName"):
        OpcUaVisitorConfig.model_validate({"mode": "poll"})
    with pytest.raises(ValidationError, match="dataType"):
        OpcUaVisitorConfig.model_validate({"nodeID": "i=1", "dataType": "Int128"})
    with pytest.raises(ValidationError, match=r"unknown|Extra inputs"):
        OpcUaVisitorConfig.model_validate({"nodeID": "i=1", "nodeid": "i=2"})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "must be trusted"),
        ({"securityMode": "None"}, "needs securityMode"),
        ({"certificate": None}, "certificate and privateKey"),
        ({"remoteCertificate": "-----BEGIN CERTIFICATE-----"}, "must be a file path"),
    ],
)
def test_security_refusals(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OpcUaProtocolConfig.model_validate({k: v for k, v in {**SECURED, **extra}.items() if v})


def test_trust_is_explicit() -> None:
    for trust in ({"trustStore": "/pki/trusted"}, {"remoteCertificate": "/s.der"}):
        assert OpcUaProtocolConfig.model_validate({**SECURED, **trust}).resolved_mode is (
            SecurityMode.SIGN_AND_ENCRYPT
        )
    allowed = OpcUaProtocolConfig.model_validate({**SECURED, "allowUntrustedServer": True})
    assert allowed.allow_untrusted_server
    with pytest.raises(ValidationError, match="needs a securityPolicy"):
        OpcUaProtocolConfig.model_validate({"url": "opc.tcp://h:1", "securityMode": "Sign"})


def test_passwords_come_from_files_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "pass"
    secret.write_text("pw\n")
    base = {"url": "opc.tcp://h:4840", "userName": "u"}
    assert (
        OpcUaProtocolConfig.model_validate({**base, "password": str(secret)}).read_password()
        == "pw"
    )
    monkeypatch.setenv("PW", "from-env")
    config = OpcUaProtocolConfig.model_validate({**base, "passwordEnv": "PW"})
    assert config.read_password() == "from-env"
    monkeypatch.delenv("PW")
    with pytest.raises(ValueError, match="PW is not set"):
        config.read_password()
    with pytest.raises(ValidationError, match="not both"):
        OpcUaProtocolConfig.model_validate({**base, "password": "/p", "passwordEnv": "PW"})


def test_loading_the_config_does_not_import_asyncua() -> None:
    code = "import sys, mapper_opcua.config; print('asyncua' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_resume_window_is_capped_by_the_session_timeout() -> None:
    url = "opc.tcp://h:4840"
    assert OpcUaProtocolConfig.model_validate({"url": url}).resume_window == 10_000
    off = OpcUaProtocolConfig.model_validate({"url": url, "resumeTimeout": 0.0})
    assert off.resume_window == 0
    short = OpcUaProtocolConfig.model_validate({"url": url, "sessionTimeout": 8000.0})
    assert short.resume_window == 4000  # the server would forget the session meanwhile
    with pytest.raises(ValidationError, match=r"resumeTimeout|resume_timeout"):
        OpcUaProtocolConfig.model_validate({"url": url, "resumeTimeout": -1.0})
