"""HTTPS for the REST API: the certificate and key are checked before anything starts, and a
renewed pair is loaded while the gateway runs.

uvicorn loads ``tls_cert``/``tls_key`` itself when it starts serving, after the devices are up,
and an unreadable or mismatched pair would then end the process with an SSL traceback. So
``check_tls`` loads the same pair first and turns every failure into a ``ConfigError`` that
names the setting and what to do. An encrypted key is refused rather than prompted for: the
gateway runs unattended, and OpenSSL's prompt would hang a service waiting on no terminal.

On an edge node the pair is renewed in place (a Kubernetes Secret mount swaps a symlink,
cert-manager rewrites the files). ``CertificateReloader`` stats both files every
``tls_reload_interval`` seconds and on SIGHUP; when they changed, it loads the new pair into a
fresh context first, with ``check_tls``'s checks, and only if that works into the server's live
``SSLContext``: new handshakes get the new certificate, open connections keep theirs. A broken
or half-written pair (certificate renewed, key not yet) leaves the old one served; the problem
is logged once, and the pair is tried again at every check until it loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

from mapper_gateway.settings import GatewaySettings
from mapper_sdk import ConfigError

log = logging.getLogger("mapper_gateway")

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

# What identifies one version of a file: device, inode, size, modification time (ns).
_Stat = tuple[int, int, int, int] | None


def _no_password() -> bytes:
    raise ValueError("encrypted")


def check_tls(settings: GatewaySettings) -> None:
    """Raise ``ConfigError`` unless the API's certificate and key load (no-op without TLS)."""
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None or key is None:
        return
    load_pair(cert, key)
    _warn_if_shared(key)


def load_pair(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context holding ``cert`` and ``key``, or a ``ConfigError`` saying what is wrong."""
    for name, path in (("tls_cert", cert), ("tls_key", key)):
        if not path.is_file():
            raise ConfigError(f"{name} {path}: no such file; give the path of a PEM file")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{name} {path}: not readable by this user; fix its owner or mode")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except ValueError as exc:  # raised by _no_password: the key wants a passphrase
        raise ConfigError(
            f"tls_key {key} is encrypted: the gateway cannot type its passphrase; give an "
            f"unencrypted key (openssl pkey -in {key.name} -out key.pem; chmod 600 key.pem)"
        ) from exc
    except ssl.SSLError as exc:
        raise ConfigError(
            f"tls_cert {cert} / tls_key {key}: {exc.reason or exc}; both must be PEM, the key "
            "the private key of the certificate"
        ) from exc
    except OSError as exc:  # replaced or removed between the checks above and the load
        raise ConfigError(f"tls_cert {cert} / tls_key {key}: {exc.strerror or exc}") from exc
    return context


def _warn_if_shared(key: Path) -> None:
    if os.name == "posix" and key.stat().st_mode & 0o077:
        log.warning("TLS key %s is readable by other users; chmod 600 it", key)


def fingerprint(cert: Path) -> str | None:
    """SHA-256 of the first certificate in a PEM file, as ``AB:CD:...``; None if it has none."""
    try:
        found = _PEM_CERT.search(cert.read_bytes())
        if found is None:
            return None
        der = ssl.PEM_cert_to_DER_cert(found.group().decode("ascii"))
    except (OSError, ValueError):
        return None
    return hashlib.sha256(der).digest().hex(":").upper()  # as openssl x509 -fingerprint prints it


def _stat(path: Path) -> _Stat:
    try:
        # Resolved each time: a Secret mount renews by pointing a symlink at a new directory.
        st = path.resolve().stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class CertificateReloader:
    """Loads a renewed certificate/key pair into the live server context, without a restart.

    Build it before the server loads the pair (what it sees then is taken as served), then run
    ``watch(context)`` with the server's context while the server runs. ``request()`` (the
    SIGHUP handler) asks for a reload now, whether or not the files look changed.
    """

    def __init__(self, cert: Path, key: Path, *, interval: float) -> None:
        self.cert = cert
        self.key = key
        self.interval = interval
        self.reloads = 0  # pairs loaded since start
        self._loaded = self._signature()
        self._wake = asyncio.Event()
        self._forced = False
        self._warned: str | None = None

    @classmethod
    def for_settings(cls, settings: GatewaySettings) -> CertificateReloader | None:
        """The reloader of the API's pair; None when the API serves plain HTTP."""
        if settings.tls_cert is None or settings.tls_key is None:
            return None
        return cls(settings.tls_cert, settings.tls_key, interval=settings.tls_reload_interval)

    def _signature(self) -> tuple[_Stat, _Stat]:
        return (_stat(self.cert), _stat(self.key))

    def request(self) -> None:
        """Reload at once (SIGHUP), even if the files look unchanged."""
        self._forced = True
        self._wake.set()

    def check(self, context: ssl.SSLContext) -> bool:
        """Load the pair into ``context`` if it changed (or a reload was requested); True if
        a new pair is now served."""
        forced, self._forced = self._forced, False
        signature = self._signature()
        if signature == self._loaded and not forced:
            self._warned = None  # back to the served pair: a later failure is news again
            return False
        try:
            load_pair(self.cert, self.key)  # a fresh context first: the live one stays intact
        except ConfigError as exc:
            self._warn(f"{exc}; still serving the previous certificate")
            return False
        if self._signature() != signature:
            log.debug("TLS certificate %s changed while being read; checking again", self.cert)
            return False  # still being written: the next check loads the finished pair
        try:
            context.load_cert_chain(self.cert, self.key, password=_no_password)
        except (ssl.SSLError, ValueError, OSError) as exc:  # replaced in the last instant
            self._warn(
                f"tls_cert {self.cert} / tls_key {self.key} changed while being loaded ({exc}); "
                "new connections may fail until the next check loads a complete pair"
            )
            return False
        self._loaded = signature
        self._warned = None
        self.reloads += 1
        log.info(
            "TLS certificate reloaded from %s and %s (SHA-256 %s)",
            self.cert,
            self.key,
            fingerprint(self.cert) or "unknown",
        )
        with contextlib.suppress(OSError):  # replaced again since: the next check says
            _warn_if_shared(self.key)
        return True

    def _warn(self, message: str) -> None:
        if message != self._warned:  # once per distinct failure, not at every poll
            self._warned = message
            log.warning("TLS reload failed: %s", message)

    async def run(self, context: ssl.SSLContext) -> None:
        """Check every ``interval`` seconds (never when 0) and on ``request()``, forever."""
        while True:
            if self.interval > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
            else:
                await self._wake.wait()
            self._wake.clear()
            try:
                self.check(context)
            except Exception:  # a surprise must not end the watching; the old pair stays
                log.exception("TLS reload check of %s failed", self.cert)

    @contextlib.asynccontextmanager
    async def watch(self, context: ssl.SSLContext) -> AsyncIterator[None]:
        """``run(context)`` as a task for the duration of the block."""
        task = asyncio.create_task(self.run(context), name="tls-reload")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.wait([task])
