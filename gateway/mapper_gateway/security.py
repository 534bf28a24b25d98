"""Who may call the API: the bearer token, the brute-force limiter and the audit log.

Rules (reliability.md §4.7-4.8):

- Bound to loopback, reads are open and every write needs the token; bound anywhere else,
  every route but ``/healthz`` needs it. A token that is presented is always checked, so a
  wrong one is refused even where none is required.
- Tokens are compared in constant time, as SHA-256 digests (equal lengths, nothing learned
  from timing); only an 8-hex-digit prefix of the digest ever appears in a log line.
- A client (by address) with ``max_failures`` failed authentications inside ``block_seconds``
  is answered 429 for ``block_seconds``, right token or not.
- Every write attempt, accepted or refused, is one audit record (``audit.py``).

The checks run as route dependencies (``deps.py``), never as a path-prefix middleware, so a
route cannot escape them through a path trick (reliability A6).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

from mapper_gateway.settings import GatewaySettings
from mapper_sdk import ConfigError

log = logging.getLogger("mapper_gateway")

_MAX_TRACKED_CLIENTS = 10_000  # the limiter's memory is bounded even under a spoofing flood


class ApiError(Exception):
    """An API refusal, answered as ``{"status", "reason", "message"}`` with ``status_code``."""

    def __init__(
        self,
        status_code: int,
        reason: str,
        message: str,
        *,
        status: str = "error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.reason = reason
        self.message = message
        self.status = status
        self.headers = headers

    def body(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason, "message": self.message}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: ``token:<digest prefix>`` or ``anonymous``, and from where."""

    name: str
    client: str


class ApiToken:
    """The API's bearer token; holds only its digest after construction."""

    def __init__(self, secret: str, *, generated: bool = False) -> None:
        if not secret:
            raise ValueError("the API token must not be empty")
        digest = hashlib.sha256(secret.encode()).digest()
        self._digest = digest
        self.id = digest.hex()[:8]
        self.generated = generated

    @classmethod
    def resolve(cls, settings: GatewaySettings) -> tuple[ApiToken, str | None]:
        """The configured token, or a new one; the secret is returned only when generated."""
        if settings.token is not None:
            return cls(settings.token.get_secret_value()), None
        if settings.token_file is not None:
            return cls(_read_token_file(settings.token_file)), None
        secret = secrets.token_urlsafe(24)
        return cls(secret, generated=True), secret

    def matches(self, presented: str) -> bool:
        candidate = hashlib.sha256(presented.encode()).digest()
        return hmac.compare_digest(candidate, self._digest)


def _read_token_file(path: Path) -> str:
    try:
        secret = path.read_text().strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise ConfigError(
            f"token_file {path}: {why}; point --token-file at a readable file holding the token"
        ) from exc
    if not secret:
        raise ConfigError(
            f"token_file {path} is empty: write the token into it (e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or drop "
            "--token-file to have a token generated at start"
        )
    if os.name == "posix" and mode & 0o077:
        log.warning("token file %s is readable by other users; chmod 600 it", path)
    return secret


class FailureLimiter:
    """Counts failed authentications per client and blocks the noisy ones for a while."""

    def __init__(self, max_failures: int, block_seconds: float) -> None:
        self.max_failures = max_failures
        self.block_seconds = block_seconds
        self.blocked_total = 0
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._blocked: dict[str, float] = {}

    def retry_after(self, client: str, now: float | None = None) -> float:
        """Seconds ``client`` stays blocked; 0 when it is not blocked."""
        until = self._blocked.get(client)
        if until is None:
            return 0.0
        left = until - (time.monotonic() if now is None else now)
        if left <= 0:
            del self._blocked[client]
            return 0.0
        return left

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        window = self._failures.pop(client, None) or deque(maxlen=self.max_failures)
        self._failures[client] = window  # most recent last, so the oldest are evicted first
        window.append(now)
        while window and window[0] <= now - self.block_seconds:
            window.popleft()
        if len(window) >= self.max_failures:
            self._blocked[client] = now + self.block_seconds
            self.blocked_total += 1
            window.clear()
        while len(self._failures) > _MAX_TRACKED_CLIENTS:
            self._failures.popitem(last=False)
        if len(self._blocked) > _MAX_TRACKED_CLIENTS:
            self._blocked.pop(next(iter(self._blocked)))


class Guard:
    """Decides whether a request may go on, from its token and the binding address."""

    def __init__(self, token: ApiToken, limiter: FailureLimiter, *, loopback_only: bool) -> None:
        self.token = token
        self.limiter = limiter
        self.loopback_only = loopback_only
        self.failures = 0

    def check(self, presented: str | None, client: str, *, write: bool) -> Principal:
        """Return who is calling, or raise ``ApiError`` (401 or 429)."""
        wait = self.limiter.retry_after(client)
        if wait > 0:
            raise ApiError(
                429,
                "too_many_failures",
                f"too many failed authentications; retry in {wait:.0f} s",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        required = write or not self.loopback_only
        if presented is None:
            if not required:
                return Principal("anonymous", client)
            self._fail(client)
            what = "writes need" if write else "this API is not on loopback and needs"
            raise ApiError(
                401,
                "unauthorized",
                f"{what} a bearer token (header 'Authorization: Bearer <token>')",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not self.token.matches(presented):
            self._fail(client)
            raise ApiError(
                401, "unauthorized", "wrong token", headers={"WWW-Authenticate": "Bearer"}
            )
        return Principal(f"token:{self.token.id}", client)

    def _fail(self, client: str) -> None:
        self.failures += 1
        self.limiter.failed(client)
