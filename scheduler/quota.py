"""Tenant quotas: requests per minute, tokens per minute, requests at once.

Pure and synchronous like the rest of ``scheduler/``: ``now`` is passed in. The
gateway talks to the small ``Quotas`` protocol only, so a store shared by many
gateways (Redis: one script per ``try_acquire``) can replace ``LocalQuotas``
without touching a caller.

Per-minute limits are token buckets (capacity = the limit, refilled at
limit/60 per second), so a tenant may burst its whole minute and is then paced.
A request is charged 1 request and ``prompt + max_tokens`` tokens at admission;
on its terminal outcome the unused part of the token charge is refunded and its
concurrency slot freed, exactly once (``release`` of a released grant is a no-op).
A single request larger than the whole token budget is admitted when the bucket
is full and leaves it in debt, rather than being refused forever.

Limits travel with each call (they come from the API key in the live config),
so a config reload changes a tenant's limits without losing its state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

Reason = Literal["tenant_rate", "tenant_tokens", "tenant_concurrency"]
# A slot frees when some request of the tenant ends: unknowable here, so soon.
_CONCURRENCY_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """One tenant's limits; None is unlimited."""

    requests_per_min: int | None = None
    tokens_per_min: int | None = None
    max_concurrent: int | None = None

    @property
    def unlimited(self) -> bool:
        return (self.requests_per_min is None and self.tokens_per_min is None
                and self.max_concurrent is None)


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    reason: Reason
    retry_after_s: float  # seconds until the tenant has the budget again, >= 1
    message: str


@dataclass(slots=True, eq=False)
class QuotaGrant:
    """What one admitted request holds until its terminal outcome."""

    tenant: str
    tokens: int  # charged at admission
    tracked: bool = True  # False: the tenant is unlimited, nothing to give back
    released: bool = False


class Quotas(Protocol):
    def try_acquire(self, tenant: str, limits: TenantLimits, tokens: int,
                    now: float) -> QuotaGrant | QuotaRefusal:
        """Charge one request of ``tokens`` tokens, or say which limit refuses it."""
        ...

    def release(self, grant: QuotaGrant, now: float, used_tokens: int | None = None) -> bool:
        """The request ended: free its slot, refund unused tokens. False if already released."""
        ...


@dataclass(slots=True)
class _Bucket:
    level: float
    updated: float

    def refill(self, capacity: int, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.level = min(float(capacity), self.level + elapsed * capacity / 60.0)
        self.updated = now

    def wait_for(self, cost: int, capacity: int) -> float:
        """Seconds until ``cost`` fits; a cost over the capacity needs a full bucket."""
        missing = min(cost, capacity) - self.level
        return max(0.0, missing) * 60.0 / capacity


@dataclass(slots=True)
class _Tenant:
    requests: _Bucket
    tokens: _Bucket
    tokens_capacity: int | None = None
    active: int = 0


class LocalQuotas:
    """In-process quota state, one entry per tenant seen."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}

    def try_acquire(self, tenant: str, limits: TenantLimits, tokens: int,
                    now: float) -> QuotaGrant | QuotaRefusal:
        if limits.unlimited:
            return QuotaGrant(tenant, tokens, tracked=False)
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant(
                _Bucket(float(limits.requests_per_min or 0), now),
                _Bucket(float(limits.tokens_per_min or 0), now))
        state.tokens_capacity = limits.tokens_per_min
        refusals: list[QuotaRefusal] = []
        if limits.max_concurrent is not None and state.active >= limits.max_concurrent:
            refusals.append(QuotaRefusal(
                "tenant_concurrency", _CONCURRENCY_RETRY_S,
                f"Tenant {tenant!r} has {state.active} requests in flight, its limit."))
        rpm, tpm = limits.requests_per_min, limits.tokens_per_min
        if rpm is not None:
            state.requests.refill(rpm, now)
            wait = state.requests.wait_for(1, rpm)
            if wait > 0:
                refusals.append(QuotaRefusal(
                    "tenant_rate", wait, f"Tenant {tenant!r} is over its {rpm} requests/min."))
        if tpm is not None:
            state.tokens.refill(tpm, now)
            wait = state.tokens.wait_for(tokens, tpm)
            if wait > 0:
                refusals.append(QuotaRefusal(
                    "tenant_tokens", wait,
                    f"Tenant {tenant!r} is over its {tpm} tokens/min (this request: {tokens})."))
        if refusals:
            worst = max(refusals, key=lambda r: r.retry_after_s)
            # Whole seconds, at least one: what Retry-After can say.
            return QuotaRefusal(worst.reason, max(1.0, math.ceil(worst.retry_after_s)),
                                worst.message)
        if rpm is not None:
            state.requests.level -= 1
        if tpm is not None:
            state.tokens.level -= tokens
        state.active += 1
        grant = QuotaGrant(tenant, tokens)
        return grant

    def release(self, grant: QuotaGrant, now: float, used_tokens: int | None = None) -> bool:
        if grant.released:
            return False
        grant.released = True
        state = self._tenants.get(grant.tenant)
        if not grant.tracked or state is None:
            return True
        state.active -= 1
        capacity = state.tokens_capacity
        if used_tokens is not None and capacity is not None and used_tokens < grant.tokens:
            state.tokens.refill(capacity, now)
            state.tokens.level = min(float(capacity),
                                     state.tokens.level + grant.tokens - max(0, used_tokens))
        return True

    def active(self, tenant: str) -> int:
        """Requests of ``tenant`` admitted and not yet released."""
        state = self._tenants.get(tenant)
        return state.active if state is not None else 0
