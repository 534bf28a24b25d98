"""One OPC-UA session: an asyncua ``Client`` built from the protocol config, and its health.

asyncua's watchdog probes the server every ``keepAliveInterval`` and reports a lost socket or a
failed probe through ``connection_lost_callback``. What happens next depends on
``resumeTimeout``:

- **Resume (default).** A lost *channel* does not end the *session*: the server keeps an
  activated session with subscriptions for ``sessionTimeout`` (Part 4 §6.7), sampling its
  monitored items and queueing what it could not publish. asyncua's reconnect loop opens a new
  channel, re-activates the session on it, takes the subscriptions back with
  TransferSubscriptions and asks Republish for every notification sent but not acknowledged
  (``subscription`` bounds that step: asyncua 2.1's own loops against its own server), so
  nothing the server queued is lost, not even intermediate values. The connection gives it
  ``resumeTimeout``; ``resuming`` is true meanwhile. When the server no longer knows the
  session (it restarted, or the session timed out), asyncua creates a new one and re-creates
  the subscriptions: ``recreated`` is set, and the subscription code reads every value once,
  which covers the gap with the latest values (intermediate ones are gone with the server's
  queues).
- **No resume** (``resumeTimeout: 0``), or a session not back within ``resumeTimeout``:
  ``lost`` is set; every later request and the subscriptions fail with
  ``DeviceConnectError``, and the SDK supervisor reconnects with its backoff, through a new
  ``Connection``: reusing a Client after a failed reconnect can hang forever (asyncua #1660).
  The old session stays on the server until ``sessionTimeout``: nothing can close it over a
  dead channel.

While a session is being resumed, reads, writes and method calls wait for it (``ready``), and
a read sent just as the channel broke is sent again on the resumed session (``recover``).
Notifications flow again up to 1 s after a resume (asyncua's publish loop sleeps 1 s after a
failed Publish). With a ``keepAliveInterval`` under about 700 ms, asyncua's own stale check
(1.5 keep-alive periods, at least 1 s) may re-create the subscriptions first: the latest
values are then still read, the ones in between are lost.

``guard`` is the one place where asyncua exceptions become SDK errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
    Observer,
    StatusCodes,
    SubscriptionEvent,
    UaClientState,
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


_RESUME_RETRY_CAP = 1.0
"""Seconds between attempts to resume a session (asyncua starts at 1 s and doubles to this)."""


class _Observer(Observer):
    """asyncua's hooks for client state and subscription events, forwarded to a Connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def on_state_change(self, state: UaClientState) -> None:
        self._conn._on_state(state)

    def on_subscription_event(self, subscription_id: int | None, event: SubscriptionEvent) -> None:
        if event is SubscriptionEvent.RECREATED:
            self._conn.recreated.set()


class Connection:
    """A connected asyncua Client plus what was learnt at connect time."""

    def __init__(self, config: OpcUaProtocolConfig) -> None:
        self.config = config
        resume = config.resume_window / 1000
        self.client = Client(
            config.url,
            timeout=config.timeout / 1000,
            watchdog_intervall=config.keep_alive_interval / 1000,
            reconnect_max_delay=_RESUME_RETRY_CAP,
            reconnect_request_timeout=resume,  # requests wait for the resume, no longer
        )
        self.client.session_timeout = int(config.session_timeout)
        self.client.secure_channel_timeout = int(config.channel_lifetime)
        self.client.connection_lost_callback = self._on_lost
        self.client.uaclient.observer = _Observer(self)
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self.resuming = False
        """A channel was lost and asyncua is re-activating the session on a new one."""
        self.resumes = 0
        """Lost channels after which the session came back."""
        self.resumed_at = 0.0
        """``time.monotonic()`` of the last resume."""
        self.recreated = asyncio.Event()
        """Set when asyncua re-created a subscription: what the server queued for it is gone."""
        self.limits = Limits()
        self.namespaces: list[str] = []
        self._give_up: asyncio.TimerHandle | None = None
        self._closing = False
        self._resume_started = asyncio.Event()
        self._resume_ended = asyncio.Event()

    async def _on_lost(self, exc: Exception) -> None:
        self.lost_reason = str(exc) or type(exc).__name__
        if self.config.resume_window <= 0 or self._closing:
            self.lost.set()
            return
        if not self.resuming:
            self.resuming = True
            self._resume_ended.clear()
            self._resume_started.set()
            log.info("lost the channel to %s (%s); resuming", self.config.url, self.lost_reason)
            self._give_up = asyncio.get_running_loop().call_later(
                self.config.resume_window / 1000, self._resume_failed
            )

    def _on_state(self, state: UaClientState) -> None:
        if state is UaClientState.CONNECTED and self.resuming:
            self._end_resume()
            self.resumes += 1
            self.resumed_at = time.monotonic()
            log.info("resumed the session with %s", self.config.url)

    def _resume_failed(self) -> None:
        self._end_resume()
        self.lost_reason = (
            f"{self.lost_reason}; the session was not back within "
            f"{self.config.resume_window / 1000:g} s"
        )
        self.lost.set()

    def _end_resume(self) -> None:
        self.resuming = False
        self._resume_started.clear()
        self._resume_ended.set()
        if self._give_up is not None:
            self._give_up.cancel()
            self._give_up = None

    async def ready(self) -> None:
        """Wait out a resume in progress; ``DeviceConnectError`` once the link is lost."""
        if self.resuming:
            await self._resume_ended.wait()
        self.check()

    async def recover(self, error: DeviceConnectError, resumes: int) -> None:
        """After a request failed with ``error``: return once the session was resumed, so the
        request may be sent again; raise ``error`` when it was not. ``resumes`` is the count of
        resumes when the request was sent.

        The request may have failed before asyncua noticed the lost channel: a closed socket
        is noticed at once, a silent one by the next keep-alive probe, so that long is given.
        """
        if self.config.resume_window <= 0 or self.lost.is_set() or self._closing:
            raise error
        if not self.resuming and self.resumes > resumes:
            return  # resumed while the request was waiting for its answer
        if not self.resuming:
            noticed = asyncio.ensure_future(self._resume_started.wait())
            try:
                await asyncio.wait([noticed], timeout=2 * self.config.keep_alive_interval / 1000)
            finally:
                noticed.cancel()
            if not self.resuming and not self.lost.is_set():
                raise error  # the link is fine: the failure was the request's own
        try:
            await self.ready()
        except DeviceConnectError:
            raise error from None

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
                await self.client.connect(auto_reconnect=self.config.resume_window > 0)
                self.namespaces = await self.client.get_namespace_array()
                self.limits = await self._read_limits()
        except DeviceConnectError:
            raise
        except DriverError as exc:  # refused certificates, identities, endpoints: no link
            raise DeviceConnectError(str(exc)) from exc

    async def close(self) -> None:
        """Close session, channel and socket; never raises, never leaves a task behind."""
        self._closing = True
        self._end_resume()
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
