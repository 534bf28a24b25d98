"""Models for the OPC-UA ``protocol.configData`` and ``visitors.configData`` maps.

KubeEdge's own keys (contract §6.2: ``url``, ``userName``, ``password`` as a file path,
``securityPolicy``, ``securityMode``, ``certificate``, ``privateKey``, ``remoteCertificate``,
``timeout``; visitor ``nodeID`` and ``browseName``) keep their meaning; the rest are opt-in
extras. Numbers arrive as floats (contract §1.5), which pydantic's lax mode accepts.

This module must not import asyncua: loading YAML validates configs without loading protocol
libraries. NodeId text is therefore checked here by its grammar only and parsed by the driver.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import AliasChoices, BeforeValidator, Field, model_validator

from mapper_sdk.driver import DriverConfig

__all__ = [
    "DeadbandType",
    "Mode",
    "OpcUaProtocolConfig",
    "OpcUaVisitorConfig",
    "SecurityMode",
    "SecurityPolicy",
    "UserIdentity",
    "check_node_id",
]


class SecurityPolicy(StrEnum):
    NONE = "None"
    BASIC128RSA15 = "Basic128Rsa15"
    BASIC256 = "Basic256"
    BASIC256SHA256 = "Basic256Sha256"
    AES128SHA256RSAOAEP = "Aes128Sha256RsaOaep"
    AES256SHA256RSAPSS = "Aes256Sha256RsaPss"


class SecurityMode(StrEnum):
    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class UserIdentity(StrEnum):
    ANONYMOUS = "anonymous"
    USERNAME = "username"
    CERTIFICATE = "certificate"


class Mode(StrEnum):
    """How a property's value reaches the mapper (or, for ``method``, what a write does)."""

    POLL = "poll"
    SUBSCRIBE = "subscribe"
    METHOD = "method"


class DeadbandType(StrEnum):
    ABSOLUTE = "absolute"
    PERCENT = "percent"


def _any_case(enum: type[StrEnum]) -> Any:
    """A validator taking any capitalisation (and ``_``/``-``/spaces) of the enum's values."""
    table = {re.sub(r"[\W_]", "", m.value.lower()): m.value for m in enum}

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            return table.get(re.sub(r"[\W_]", "", value.lower()), value)
        return value

    return BeforeValidator(parse)


# One NodeId text (OPC-UA Part 6 §5.3.1.10): [ns=<index>;|nsu=<uri>;][srv=<n>;]<type>=<id>.
_NODE_ID = re.compile(
    r"(?:(?:ns=\d+|nsu=[^;]+);)?(?:srv=\d+;)?"
    r"(?:i=\d+|s=.+|g=[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|b=[A-Za-z0-9+/=]+|b=0x[0-9a-fA-F]*)",
    re.DOTALL,
)


def check_node_id(text: str) -> str:
    """``text`` if it is NodeId syntax (``i=``, ``s=``, ``g=`` or ``b=``, with ``ns=`` or
    ``nsu=``), else ``ValueError``."""
    text = text.strip()
    if not _NODE_ID.fullmatch(text):
        raise ValueError(
            f"{text!r} is not a NodeId: write ns=<index>;i=<number>, ns=<index>;s=<name>, "
            "ns=<index>;g=<guid>, ns=<index>;b=<base64> (or nsu=<namespace uri>; for ns=)"
        )
    return text


def _file_path(name: str, value: str | None) -> None:
    # Key material and secrets stay in files the operator protects, never in a CRD.
    if value is not None and ("-----BEGIN" in value or "\n" in value):
        raise ValueError(f"{name} must be a file path, not the certificate or key itself")


Ms = Annotated[float, Field(gt=0, allow_inf_nan=False)]

BUILTIN_TYPES = (
    "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
    "Float", "Double", "String", "DateTime", "Guid", "ByteString",
)  # fmt: skip
"""OPC-UA built-in types a visitor's ``dataType`` may force for writes."""
_KUBEEDGE_TYPES = frozenset({"int", "float", "double", "boolean", "string", "bytes"})


def _data_type(value: Any) -> Any:
    """A built-in type name in its canonical case; KubeEdge's model-type names are accepted
    (they restate the model type, so the node's DataType still decides the wire type)."""
    if not isinstance(value, str):
        return value
    if value.lower() in _KUBEEDGE_TYPES:
        return value.lower()
    for name in BUILTIN_TYPES:
        if name.lower() == value.lower():
            return name
    raise ValueError(f"dataType {value!r} is not one of {', '.join(BUILTIN_TYPES)}")


class OpcUaProtocolConfig(DriverConfig):
    """``spec.protocol.configData`` of an OPC-UA device (times in milliseconds)."""

    # Keys of v1alpha2's `common` section that the legacy converter copies in; they configured
    # the Go mapper's own loops, which the SDK supervisor replaces.
    IGNORED_LEGACY_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"commType", "reconnTimeout", "reconnRetryTimes", "collectTimeout", "collectRetryTimes"}
        | {"collectType"}
    )

    url: str = Field(pattern=r"^opc\.tcp://[^/\s]+")
    security_policy: Annotated[SecurityPolicy, _any_case(SecurityPolicy)] = SecurityPolicy.NONE
    security_mode: Annotated[SecurityMode, _any_case(SecurityMode)] | None = None
    certificate: str | None = Field(None, description="client certificate file (DER or PEM)")
    private_key: str | None = Field(None, description="client private key file (PEM or DER)")
    application_uri: str | None = Field(
        None, description="defaults to the URI in the client certificate"
    )
    remote_certificate: str | None = Field(None, description="the server certificate to pin")
    trust_store: str | None = Field(None, description="directory of trusted server/CA certs")
    allow_untrusted_server: bool = False
    user_identity: Annotated[UserIdentity, _any_case(UserIdentity)] | None = None
    user_name: str | None = Field(None, validation_alias=AliasChoices("userName", "username"))
    password: str | None = Field(
        None,
        validation_alias=AliasChoices("password", "passwordFile"),
        description="file holding the password (KubeEdge's meaning of `password`)",
    )
    password_env: str | None = Field(None, description="environment variable with the password")
    user_certificate: str | None = None
    user_private_key: str | None = None
    timeout: Ms = Field(4000.0, description="per request")
    session_timeout: Ms = 60_000.0
    channel_lifetime: Ms = 3_600_000.0
    keep_alive_interval: Ms = Field(
        1000.0, description="health probe period; subscriptions keep alive every two probes"
    )
    max_nodes_per_read: int = Field(0, ge=0, description="0: the server's OperationLimits")
    resume_timeout: float = Field(
        10_000.0,
        ge=0,
        allow_inf_nan=False,
        description="how long to try to resume the session (and its subscriptions, with the "
        "notifications the server queued) on a new channel after a lost one, before a full "
        "reconnect; 0: reconnect at once; at most half the sessionTimeout",
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_legacy_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in cls.IGNORED_LEGACY_KEYS}
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in ("certificate", "private_key", "remote_certificate", "password"):
            _file_path(name, getattr(self, name))
        secured = self.security_policy is not SecurityPolicy.NONE
        if secured and self.resolved_mode is SecurityMode.NONE:
            raise ValueError(
                f"securityPolicy {self.security_policy} needs securityMode Sign or SignAndEncrypt"
            )
        if not secured and self.security_mode not in (None, SecurityMode.NONE):
            raise ValueError(f"securityMode {self.security_mode} needs a securityPolicy")
        if secured and not (self.certificate and self.private_key):
            raise ValueError("a securityPolicy needs the client's certificate and privateKey files")
        trusts = self.trust_store or self.remote_certificate or self.allow_untrusted_server
        if secured and not trusts:
            raise ValueError(
                "the server's certificate must be trusted: set remoteCertificate (the "
                "server's certificate file) or trustStore (a directory of trusted "
                "certificates), or allowUntrustedServer: true to accept any server"
            )
        if self.password and self.password_env:
            raise ValueError("set password (a file) or passwordEnv, not both")
        if self.resolved_identity is UserIdentity.USERNAME and not self.user_name:
            raise ValueError("userIdentity username needs userName")
        if self.resolved_identity is UserIdentity.CERTIFICATE and not self.user_key_pair[0]:
            raise ValueError("userIdentity certificate needs userCertificate (or certificate)")
        return self

    @property
    def resume_window(self) -> float:
        """Milliseconds to resume a session: ``resumeTimeout``, capped at half the
        ``sessionTimeout`` (after which the server forgets the session, subscriptions and all)."""
        return min(self.resume_timeout, self.session_timeout / 2)

    @property
    def resolved_mode(self) -> SecurityMode:
        """The mode in force: SignAndEncrypt when a policy is set without a mode."""
        if self.security_mode is not None:
            return self.security_mode
        if self.security_policy is SecurityPolicy.NONE:
            return SecurityMode.NONE
        return SecurityMode.SIGN_AND_ENCRYPT

    @property
    def resolved_identity(self) -> UserIdentity:
        if self.user_identity is not None:
            return self.user_identity
        return UserIdentity.USERNAME if self.user_name else UserIdentity.ANONYMOUS

    @property
    def user_key_pair(self) -> tuple[str | None, str | None]:
        """Certificate and key of a certificate user identity (default: the client's own)."""
        return (
            self.user_certificate or self.certificate,
            self.user_private_key or self.private_key,
        )

    def read_password(self) -> str | None:
        """The password from its file or environment variable; ``ValueError`` if missing."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(f"environment variable {self.password_env} is not set")
            return value
        if self.password:
            return Path(self.password).read_text().rstrip("\r\n")
        return None


class OpcUaVisitorConfig(DriverConfig):
    """``visitors.configData`` of one property (times in milliseconds)."""

    node_id: str | None = Field(
        None, validation_alias=AliasChoices("nodeID", "nodeId", "node_id"), alias="nodeID"
    )
    browse_name: str | None = Field(
        None,
        validation_alias=AliasChoices("browseName", "browse_name"),
        alias="browseName",
        description="a path below Objects, e.g. 2:Boiler/2:Temperature; used without nodeID",
    )
    mode: Annotated[Mode, _any_case(Mode)] = Mode.POLL
    sampling_interval: float | None = Field(None, ge=0, allow_inf_nan=False)
    publishing_interval: Ms | None = Field(None, description="default: the collectCycle")
    queue_size: int = Field(1, ge=1)
    deadband: float = Field(0.0, ge=0, allow_inf_nan=False)
    deadband_type: Annotated[DeadbandType, _any_case(DeadbandType)] = DeadbandType.ABSOLUTE
    data_type: Annotated[str | None, BeforeValidator(_data_type)] = Field(
        None, description="an OPC-UA built-in type name to write as, e.g. Int16"
    )
    object_id: str | None = Field(
        None,
        validation_alias=AliasChoices("objectID", "objectId", "object_id"),
        alias="objectID",
        description="mode method: the object owning the method (default: found by browsing)",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.node_id is None and self.browse_name is None:
            raise ValueError("set nodeID (e.g. ns=2;i=3) or browseName (e.g. 2:Device/2:Value)")
        for value in (self.node_id, self.object_id):
            if value is not None:
                check_node_id(value)
        if self.mode is not Mode.METHOD and self.object_id is not None:
            raise ValueError("objectID is only used with mode: method")
        return self

    @property
    def wire_type(self) -> str | None:
        """The built-in type writes must use, when ``dataType`` forces one."""
        return self.data_type if self.data_type in BUILTIN_TYPES else None
