"""One OPC-UA session: an asyncua ``Client`` built from the protocol config, and its health.

A ``Connection`` is used for one connect attempt and then thrown away: reusing a Client after
a lost link can hang forever (asyncua #1660), so the driver builds a new one on every connect.
asyncua's own reconnect loop stays off (``subscription`` says why: its session transfer and
republish are not safe in asyncua 2.1); the SDK supervisor owns reconnection. asyncua's
watchdog still probes the server every ``keepAliveInterval`` and reports a lost socket or a
failed probe through ``connection_lost_callback``, which sets ``lost``; every later request and
the subscriptions then fail with ``DeviceConnectError``.

``guard`` is the one place where asyncua exceptions become SDK errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.crypto import security_policies, uacrypto
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509

from mapper_opcua._ua import (
    AttributeIds,
    Client,
    ObjectIds,
    StatusCodes,
    UaError,
    UaStatusCodeError,
)
from mapper_opcua.config import OpcUaProtocolConfig, SecurityPolicy, UserIdentity
from mapper_opcua.convert import is_good
from mapper_sdk.errors import (
    DeviceConnectError,
    DeviceProtocolError,
    DeviceTimeoutError,
    DriverError,
)

__all__ = ["Connection", "Limits", "guard"]

log = logging.getLogger("mapper_opcua")

DEFAULT_APPLICATION_URI = "urn:mapper-sdk:opcua:client"

# Status codes that mean the session or channel is gone: reconnect rather than retry.
_LINK_LOST = frozenset(
    {
        StatusCodes.BadSessionIdInvalid,
        StatusCodes.BadSessionClosed,
        StatusCodes.BadSessionNotActivated,
        StatusCodes.BadSecureChannelIdInvalid,
        StatusCodes.BadSecureChannelClosed,
        StatusCodes.BadConnectionClosed,
        StatusCodes.BadServerNotConnected,
        StatusCodes.BadCommunicationError,
        StatusCodes.BadNotConnected,
        StatusCodes.BadShutdown,
        StatusCodes.BadServerHalted,
    }
)
_LIMIT_NODES = (
    ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite,
    ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerMethodCall,
    ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
)


@dataclass(frozen=True, slots=True)
class Limits:
    """The server's OperationLimits; 0 means no limit (Part 5 §6.3.11)."""

    read: int = 0
    write: int = 0
    call: int = 0
    monitored_items: int = 0


def is_link_lost(status: int) -> bool:
    return status in _LINK_LOST


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Translate asyncua and socket exceptions raised inside into ``DriverError``s."""
    try:
        yield
    except DriverError:
        raise
    except UaStatusCodeError as exc:
        name = ua.StatusCode(exc.code).name
        if is_link_lost(exc.code):
            raise DeviceConnectError(f"{what}: {name}") from exc
        raise DeviceProtocolError(f"{what}: {name}") from exc
    except TimeoutError as exc:
        raise DeviceTimeoutError(f"{what}: no answer in time") from exc
    except (ConnectionError, OSError) as exc:
        raise DeviceConnectError(f"{what}: {exc or type(exc).__name__}") from exc
    except UaError as exc:
        raise DeviceProtocolError(f"{what}: {exc}") from exc


class Connection:
    """A connected asyncua Client plus what was learnt at connect time."""

    def __init__(self, config: OpcUaProtocolConfig) -> None:
        self.config = config
        self.client = Client(
            config.url,
            timeout=config.timeout / 1000,
            watchdog_intervall=config.keep_alive_interval / 1000,
        )
        self.client.session_timeout = int(config.session_timeout)
        self.client.secure_channel_timeout = int(config.channel_lifetime)
        self.client.connection_lost_callback = self._on_lost
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self.limits = Limits()
        self.namespaces: list[str] = []

    async def _on_lost(self, exc: Exception) -> None:
        self.lost_reason = str(exc) or type(exc).__name__
        self.lost.set()

    def check(self) -> None:
        """Raise ``DeviceConnectError`` once the link is known to be gone."""
        if self.lost.is_set():
            raise DeviceConnectError(f"connection to {self.config.url} lost: {self.lost_reason}")

    async def open(self) -> None:
        """Secure, authenticate and connect; then learn the limits and namespaces."""
        what = f"connect to {self.config.url}"
        try:
            with guard(what):
                await self._set_security()
                await self._set_identity()
                await self.client.connect(auto_reconnect=False)
                self.namespaces = await self.client.get_namespace_array()
                self.limits = await self._read_limits()
        except DeviceConnectError:
            raise
        except DriverError as exc:  # refused certificates, identities, endpoints: no link
            raise DeviceConnectError(str(exc)) from exc

    async def close(self) -> None:
        """Close session, channel and socket; never raises, never leaves a task behind."""
        client = self.client
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.config.timeout / 1000):
                await client.disconnect()
        client.uaclient.disconnect_socket()  # the socket stays open if disconnect timed out
        # A publish loop whose transport died only notices CLOSED after its 1 s retry sleep.
        publish = client.uaclient.session._publish_task
        if publish is not None and not publish.done():
            publish.cancel()
            with contextlib.suppress(BaseException):
                await publish

    async def _read_limits(self) -> Limits:
        ids = [ua.NodeId(ua.Int32(i)) for i in _LIMIT_NODES]
        values = await self.client.uaclient.read_attributes(ids, AttributeIds.Value)
        numbers = [
            int(dv.Value.Value)
            if is_good(dv) and dv.Value and isinstance(dv.Value.Value, int)
            else 0
            for dv in values
        ]
        limit = self.config.max_nodes_per_read
        read = min(n for n in (numbers[0], limit) if n) if numbers[0] or limit else 0
        return Limits(read, numbers[1], numbers[2], numbers[3])

    # -- security -------------------------------------------------------------------------

    async def _set_security(self) -> None:
        config = self.config
        if config.security_policy is SecurityPolicy.NONE:
            return
        # Both are checked by the config model.
        assert config.certificate is not None
        assert config.private_key is not None
        cert = await uacrypto.load_certificate(config.certificate)
        self.client.application_uri = config.application_uri or _uri_of(cert)
        policy = getattr(security_policies, f"SecurityPolicy{config.security_policy.value}")
        mode = getattr(ua.MessageSecurityMode, config.resolved_mode.value)
        if config.trust_store:
            self.client.certificate_validator = CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_SERVER,
                await _trust_store(config.trust_store),
            )
        # With remoteCertificate the server must present exactly that certificate; without it
        # asyncua takes the one the endpoint advertises, which the validator above then checks.
        await self.client.set_security(
            policy,
            config.certificate,
            config.private_key,
            server_certificate=config.remote_certificate,
            mode=mode,
        )

    async def _set_identity(self) -> None:
        config = self.config
        identity = config.resolved_identity
        if identity is UserIdentity.USERNAME:
            assert config.user_name is not None
            self.client.set_user(config.user_name)
            try:
                password = config.read_password()
            except (OSError, ValueError) as exc:
                raise DeviceConnectError(f"cannot read the password: {exc}") from exc
            if password is not None:
                self.client.set_password(password)
        elif identity is UserIdentity.CERTIFICATE:
            cert, key = config.user_key_pair
            assert cert is not None
            assert key is not None
            await self.client.load_client_certificate(cert)
            await self.client.load_private_key(Path(key))


async def _trust_store(directory: str) -> TrustStore:
    store = TrustStore([Path(directory)], [])
    try:
        await store.load()
    except ValueError as exc:  # cryptography refuses an empty store
        raise DeviceConnectError(
            f"the server certificate is untrusted: trust store {directory} holds no certificate"
        ) from exc
    except OSError as exc:
        raise DeviceConnectError(f"cannot read trust store {directory}: {exc}") from exc
    return store


def _uri_of(cert: x509.Certificate) -> str:
    """The application URI in the certificate's SubjectAltName (servers check it)."""
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if uris:
            return uris[0]
    return DEFAULT_APPLICATION_URI
