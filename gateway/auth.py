"""API keys: ``Authorization: Bearer <key>`` -> the ``Principal`` a request runs as.

The config stores only ``sha256:<hex>`` hashes of keys. A presented key is
hashed, looked up by its hash (safe: the hash of a secret leaks nothing useful
through timing of a dict), and the final equality check is
``hmac.compare_digest``. With no key configured at all the gateway is in local
development mode: every request runs as the unlimited ``anonymous`` tenant
(and ``__main__`` refuses to listen beyond loopback).

Hash a key for the config::

    python -m gateway.auth hash sk-my-secret
    printf %s sk-my-secret | python -m gateway.auth hash -   # not in shell history
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import sys
from dataclasses import dataclass

from aiohttp import web

from gateway.config import KEY_HASH_PREFIX, AuthConfig, GatewayConfig
from gateway.errors import Unauthorized
from scheduler.quota import TenantLimits

ANONYMOUS = "anonymous"
# Compared against when a key is unknown, so both paths do the same work.
_DUMMY_HASH = KEY_HASH_PREFIX + "0" * 64


def hash_key(key: str) -> str:
    """The config form of ``key``: ``sha256:`` and the hex digest of its UTF-8 bytes."""
    return KEY_HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request runs as: its tenant, the classes it may use, its limits."""

    tenant: str
    classes: frozenset[str]  # empty: may not run completions (an admin-only key)
    default_class: str
    limits: TenantLimits
    admin: bool = False


PRINCIPAL = web.RequestKey("principal", Principal)  # set by app.py's auth middleware


class KeyRing:
    """The configured keys, ready for lookups; rebuilt whole on a config reload."""

    def __init__(self, config: GatewayConfig) -> None:
        auth: AuthConfig = config.auth
        self.open = auth.open
        self.metrics_public = auth.metrics_public or auth.open
        every = frozenset(c.name for c in config.classes)
        self._anonymous = Principal(ANONYMOUS, every, config.default_class, TenantLimits(),
                                    admin=True)
        # hash -> (the configured hash, for the final compare; who it is)
        self._by_hash: dict[str, tuple[str, Principal]] = {}
        for key in auth.keys:
            self._by_hash[key.hash] = (key.hash, Principal(
                tenant=key.tenant,
                classes=frozenset(key.classes) if key.classes is not None else every,
                default_class=key.default_class or config.default_class,
                limits=TenantLimits(key.requests_per_min, key.tokens_per_min,
                                    key.max_concurrent)))
        admin = Principal("admin", frozenset(), config.default_class, TenantLimits(),
                          admin=True)
        for admin_hash in auth.admin_keys:
            self._by_hash[admin_hash] = (admin_hash, admin)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an ``Authorization`` header value; ``Unauthorized`` if none."""
        if self.open:
            return self._anonymous
        key = _bearer(authorization)
        presented = hash_key(key) if key is not None else _DUMMY_HASH
        stored, principal = self._by_hash.get(presented, (_DUMMY_HASH, None))
        matches = hmac.compare_digest(stored, presented)  # always run: same work either way
        if principal is None or key is None or not matches:
            raise Unauthorized(
                "Incorrect API key provided." if key is not None else
                "Missing API key: send `Authorization: Bearer <key>`.",
                code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return principal


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.auth",
                                     description="Hash an API key for auth.keys / auth.admin_keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    hash_cmd = sub.add_parser("hash", help="print sha256:<hex> of a key")
    hash_cmd.add_argument("key", help="the key, or - to read it from stdin (keeps it out of "
                                      "shell history)")
    args = parser.parse_args(argv)
    key = sys.stdin.read().rstrip("\r\n") if args.key == "-" else args.key
    if not key:
        parser.error("empty key")
    print(hash_key(key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
