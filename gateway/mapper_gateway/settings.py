"""``GatewaySettings``: every process setting of the gateway, from flags, environment and a file.

Precedence, highest first: command-line flags, environment variables ``MAPPER_GATEWAY_<NAME>``,
the config file (YAML or TOML, chosen by its suffix; ``--config`` or
``MAPPER_GATEWAY_CONFIG``), then the defaults here. Unknown keys in the file are errors.

The API token is never a flag (a command line is visible to every user of the machine): it
comes from ``MAPPER_GATEWAY_TOKEN``, ``token_file`` or the config file, or is generated at start.
An empty token is a configuration error, never an empty secret.

Transport: on loopback the API may be plain HTTP. Bound anywhere else it serves HTTPS
(``tls_cert`` and ``tls_key``), or plain HTTP only when ``insecure_http`` says so explicitly,
because the bearer token would otherwise cross the network readable by anyone on the path.
"""

from __future__ import annotations

import ipaddress
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

ENV_PREFIX = "MAPPER_GATEWAY_"
DEFAULT_API = "127.0.0.1:7777"

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("mapper_gateway_config_file", default=None)


class IdStyleSetting(StrEnum):
    NAMESPACED = "namespaced"
    NAME = "name"


class GatewaySettings(BaseSettings):
    """The gateway's process settings. Build with ``GatewaySettings.load``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    devices: Path | None = Field(
        default=None,
        description="directory of Device/DeviceModel YAML files, watched and hot-reloaded",
    )
    dmi: str | None = Field(
        default=None,
        description="EdgeCore's DMI socket (KubeEdge >= 1.15), e.g. /etc/kubeedge/dmi.sock: "
        "one DMI link per installed driver takes its devices from EdgeCore",
    )
    dmi_socket_dir: Path = Field(
        default=Path("/etc/kubeedge"),
        description="where the DMI links serve their sockets (<dir>/<protocol>.sock)",
    )
    dmi_protocols: list[str] = Field(
        default_factory=list,
        description="protocols to register over DMI (default: every installed driver)",
    )
    mqtt_url: str | None = Field(
        default=None,
        description="EdgeCore's MQTT broker, e.g. tcp://127.0.0.1:1883; without it an embedded "
        "broker is started on 127.0.0.1 (needs the 'embedded-broker' extra); 'off' for none",
    )
    broker_port: int = Field(
        default=1883,
        ge=0,
        le=65535,
        description="port of the embedded broker; a free port is used when it is taken (0: any)",
    )
    node: str = Field(default="edge-node", description="the edge node name (membership topics)")
    id_style: IdStyleSetting = Field(
        default=IdStyleSetting.NAMESPACED,
        description="device ids in topics: namespace/name (KubeEdge >= 1.16.2) or name only",
    )
    membership: bool = Field(
        default=False,
        description="run only the YAML devices EdgeCore lists for --node (legacy membership "
        "over MQTT); the last list is kept in --state-dir",
    )
    api: str = Field(
        default=DEFAULT_API,
        description="HOST:PORT of the REST API; reads need the token unless HOST is loopback",
    )
    token: SecretStr | None = Field(
        default=None, description="API bearer token (env or config file only, never a flag)"
    )
    token_file: Path | None = Field(default=None, description="file holding the API token")
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) file: the API serves HTTPS (needs --tls-key too)",
    )
    tls_key: Path | None = Field(
        default=None, description="PEM private key file of --tls-cert (unencrypted; chmod 600)"
    )
    tls_reload_interval: float = Field(
        default=30.0,
        ge=0,
        description="seconds between checks of --tls-cert and --tls-key for a renewed pair, "
        "loaded without a restart (also on SIGHUP); 0: only on SIGHUP",
    )
    insecure_http: bool = Field(
        default=False,
        description="allow plain HTTP on an --api address that is not loopback (the token "
        "then crosses the network in clear); without it such an address needs --tls-cert",
    )
    local_store: bool = Field(
        default=True,
        description="keep every reported value in <state-dir>/values.sqlite3 (SQLite, one row "
        "per device report, bounded by --local-store-max-rows and --local-store-max-age; "
        "history for the API and the dashboard); --no-local-store turns it off",
    )
    local_store_max_rows: int = Field(
        default=1_000_000,
        gt=0,
        description="device reports the local store keeps (oldest dropped; a report holds "
        "the values one device reported together; 1,000,000 reports of 10 float values take "
        "about 340 MB on disk)",
    )
    local_store_max_age: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="seconds the local store keeps a value"
    )
    sink_queue: int = Field(
        default=10_000,
        gt=0,
        description="values buffered per pushMethod/dbMethod destination and for the local "
        "store; when one falls behind its oldest values are dropped (counted in /metrics), "
        "polling never waits",
    )
    audit_file: Path | None = Field(
        default=None,
        description="audit log: one JSON line per write attempt, fsynced (default: "
        "<state-dir>/audit.log)",
    )
    audit_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="size at which the audit log is rotated"
    )
    audit_keep: int = Field(
        default=5, ge=1, description="rotated audit logs kept (audit.log.1 is the newest)"
    )
    state_dir: Path = Field(
        default=Path(".mapper-state"),
        description="where the outbox, desired values and last known devices are persisted",
    )
    max_body_bytes: int = Field(
        default=64 * 1024, gt=0, description="largest request body accepted (larger: 413)"
    )
    auth_max_failures: int = Field(
        default=10, gt=0, description="failed authentications per client before it is blocked"
    )
    auth_block_seconds: float = Field(
        default=60.0, gt=0, description="how long a client is answered 429 after too many failures"
    )
    events_queue: int = Field(
        default=1000, gt=0, description="events buffered per server-sent-events client"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get()
        if path is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, _file_source(settings_cls, path))

    @classmethod
    def load(cls, values: dict[str, Any] | None = None, config: Path | None = None) -> Self:
        """Settings from ``values`` (flags) over the environment over ``config``."""
        token = _CONFIG_FILE.set(config)
        try:
            return cls(**(values or {}))
        finally:
            _CONFIG_FILE.reset(token)

    @field_validator("api")
    @classmethod
    def _check_api(cls, value: str) -> str:
        split_api(value)
        return value

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value().strip()  # a header value is stripped too
        if not secret:
            raise ValueError(
                f"{ENV_PREFIX}TOKEN (or the config file's 'token') is set but empty: set it to "
                "a secret of 32 characters or more, or unset it to have one generated at start"
            )
        return SecretStr(secret)

    @model_validator(mode="after")
    def _check_transport(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both (or neither)")
        if not self.loopback_only and self.tls_cert is None and not self.insecure_http:
            raise ValueError(
                f"api {self.api} is not loopback, and plain HTTP would send the API token in "
                "clear: serve HTTPS with --tls-cert and --tls-key, or accept the risk with "
                "--insecure-http (only on a network you trust)"
            )
        return self

    @property
    def tls(self) -> bool:
        """True when the API serves HTTPS."""
        return self.tls_cert is not None

    @property
    def audit_path(self) -> Path:
        return self.audit_file if self.audit_file is not None else self.state_dir / "audit.log"

    @property
    def api_host(self) -> str:
        return split_api(self.api)[0]

    @property
    def api_port(self) -> int:
        return split_api(self.api)[1]

    @property
    def loopback_only(self) -> bool:
        """True when the API listens on a loopback address only."""
        return is_loopback(self.api_host)


def _file_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    if path.suffix.lower() == ".toml":
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return YamlConfigSettingsSource(settings_cls, yaml_file=path)
    raise ValueError(f"config file {path}: use a .yaml, .yml or .toml file")


def split_api(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``[v6]:PORT`` for IPv6) -> ``(host, port)``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"api {value!r}: expected HOST:PORT, e.g. {DEFAULT_API}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere
