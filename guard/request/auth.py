"""Client API keys (stored hashed), the admin key, and per-key rate limits."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from guard.config import Settings
from guard.errors import AuthenticationError, PermissionDenied, RateLimited


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Auth:
    def __init__(self, settings: Settings, previous: Auth | None = None) -> None:
        self.enabled = bool(settings.api_keys)
        self._by_hash = {k.sha256: k.name for k in settings.api_keys}
        self._admin = settings.admin_key_sha256
        self._buckets: dict[str, _Bucket] = {}
        for k in settings.api_keys:
            if not k.rate_limit_rps:
                continue
            # A reload keeps a key's bucket when its limits did not change, so rotating some
            # other key does not hand everybody a fresh burst.
            old = previous._buckets.get(k.name) if previous is not None else None
            if old is not None and old.same_limits(k.rate_limit_rps, k.rate_limit_burst):
                self._buckets[k.name] = old
            else:
                self._buckets[k.name] = _Bucket(k.rate_limit_rps, k.rate_limit_burst)

    def client(self, headers: Mapping[str, str]) -> str | None:
        """The name of the client's key (None when authentication is off)."""
        if not self.enabled:
            return None
        token = _bearer(headers)
        if token is None:
            raise AuthenticationError("missing API key: send Authorization: Bearer <key>")
        digest = hashlib.sha256(token.encode()).hexdigest()
        name = self._by_hash.get(digest)
        if name is None:
            raise AuthenticationError("invalid API key")
        bucket = self._buckets.get(name)
        if bucket is not None and not bucket.take():
            raise RateLimited("rate limit exceeded for this API key; retry later")
        return name

    def admin(self, headers: Mapping[str, str]) -> None:
        if self._admin is None:
            raise PermissionDenied(
                "admin endpoints are disabled: set admin_key_sha256 (see `guard hash-key`)"
            )
        token = headers.get("x-guard-admin-key") or _bearer(headers)
        if token is None:
            raise AuthenticationError("missing admin key")
        digest = hashlib.sha256(token.encode()).hexdigest()
        if not hmac.compare_digest(digest, self._admin):
            raise AuthenticationError("invalid admin key")


class _Bucket:
    """Token bucket: ``rate`` requests per second, bursts of ``burst``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float | None, burst: int) -> None:
        self.rate = rate or 0.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def same_limits(self, rate: float | None, burst: int) -> bool:
        return self.rate == (rate or 0.0) and self.burst == float(burst)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
