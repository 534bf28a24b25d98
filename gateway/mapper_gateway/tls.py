"""HTTPS for the REST API: the certificate and key are checked before anything starts.

uvicorn loads ``tls_cert``/``tls_key`` itself when it starts serving, after the devices are up,
and an unreadable or mismatched pair would then end the process with an SSL traceback. So
``check_tls`` loads the same pair first and turns every failure into a ``ConfigError`` that
names the setting and what to do. An encrypted key is refused rather than prompted for: the
gateway runs unattended, and OpenSSL's prompt would hang a service waiting on no terminal.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

from mapper_gateway.settings import GatewaySettings
from mapper_sdk import ConfigError

log = logging.getLogger("mapper_gateway")


def _no_password() -> bytes:
    raise ValueError("encrypted")


def check_tls(settings: GatewaySettings) -> None:
    """Raise ``ConfigError`` unless the API's certificate and key load (no-op without TLS)."""
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None or key is None:
        return
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
    _warn_if_shared(key)


def _warn_if_shared(key: Path) -> None:
    if os.name == "posix" and key.stat().st_mode & 0o077:
        log.warning("TLS key %s is readable by other users; chmod 600 it", key)
