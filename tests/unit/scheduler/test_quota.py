"""Tenant quotas with an injected clock: token-bucket math, Retry-After, refunds,
and the concurrency slot released exactly once (a hypothesis state machine)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from scheduler.quota import LocalQuotas, QuotaGrant, QuotaRefusal, TenantLimits


def grant(result: QuotaGrant | QuotaRefusal) -> QuotaGrant:
    assert isinstance(result, QuotaGrant), result
    return result


def refusal(result: QuotaGrant | QuotaRefusal) -> QuotaRefusal:
    assert isinstance(result, QuotaRefusal), result
    return result


def test_unlimited_tenants_are_never_refused_nor_tracked() -> None:
    q = LocalQuotas()
    grants = [grant(q.try_acquire("t", TenantLimits(), 10**9, 0.0)) for _ in range(1000)]
    assert q.active("t") == 0
    assert all(q.release(g, 1.0) for g in grants)


def test_requests_per_minute_burst_then_paced_with_retry_after() -> None:
    q, limits = LocalQuotas(), TenantLimits(requests_per_min=6)  # one per 10 s
    for _ in range(6):
        q.release(grant(q.try_acquire("t", limits, 1, 0.0)), 0.0)
    r = refusal(q.try_acquire("t", limits, 1, 0.0))
    assert (r.reason, r.retry_after_s) == ("tenant_rate", 10.0)
    r = refusal(q.try_acquire("t", limits, 1, 7.5))
    assert r.retry_after_s == 3.0  # 2.5 s left, rounded up to whole seconds
    grant(q.try_acquire("t", limits, 1, 10.0))
    assert isinstance(q.try_acquire("t", limits, 1, 10.0), QuotaRefusal)


def test_tokens_per_minute_charges_prompt_plus_max_and_refunds_the_unused() -> None:
    q, limits = LocalQuotas(), TenantLimits(tokens_per_min=600)  # 10 tokens/s
    g = grant(q.try_acquire("t", limits, 500, 0.0))
    r = refusal(q.try_acquire("t", limits, 200, 0.0))
    assert (r.reason, r.retry_after_s) == ("tenant_tokens", 10.0)  # 100 missing at 10/s
    assert q.release(g, 0.0, used_tokens=150)  # 350 back
    grant(q.try_acquire("t", limits, 400, 0.0))
    assert refusal(q.try_acquire("t", limits, 100, 0.0)).retry_after_s == 5.0


def test_a_request_larger_than_the_budget_waits_for_a_full_bucket_then_goes_into_debt() -> None:
    q, limits = LocalQuotas(), TenantLimits(tokens_per_min=60)  # 1 token/s
    grant(q.try_acquire("t", limits, 30, 0.0))
    assert refusal(q.try_acquire("t", limits, 1000, 0.0)).retry_after_s == 30.0
    grant(q.try_acquire("t", limits, 1000, 30.0))  # full again: admitted
    # 940 tokens of debt plus one token needed: 941 s at 1 token/s.
    assert refusal(q.try_acquire("t", limits, 1, 30.0)).retry_after_s == 941.0


def test_concurrency_limit_and_the_longest_wait_wins() -> None:
    q = LocalQuotas()
    limits = TenantLimits(requests_per_min=60, max_concurrent=2)
    a, _ = grant(q.try_acquire("t", limits, 1, 0.0)), grant(q.try_acquire("t", limits, 1, 0.0))
    r = refusal(q.try_acquire("t", limits, 1, 0.0))
    assert (r.reason, r.retry_after_s) == ("tenant_concurrency", 1.0)
    assert q.release(a, 0.5) and not q.release(a, 0.5)
    assert q.active("t") == 1
    grant(q.try_acquire("t", limits, 1, 0.5))
    # Both the rate and concurrency refuse: the longer wait is the one reported.
    both = TenantLimits(requests_per_min=1, max_concurrent=1)
    grant(q.try_acquire("u", both, 1, 0.0))
    r = refusal(q.try_acquire("u", both, 1, 0.0))
    assert (r.reason, r.retry_after_s) == ("tenant_rate", 60.0)


def test_tenants_are_independent_and_new_limits_apply_to_existing_state() -> None:
    q = LocalQuotas()
    for _ in range(3):
        grant(q.try_acquire("a", TenantLimits(requests_per_min=3), 1, 0.0))
    refusal(q.try_acquire("a", TenantLimits(requests_per_min=3), 1, 0.0))
    grant(q.try_acquire("b", TenantLimits(requests_per_min=3), 1, 0.0))
    # A reload raised a's limit: the bucket refills at the new rate (100/min) from now on.
    grant(q.try_acquire("a", TenantLimits(requests_per_min=100), 1, 0.6))


@pytest.mark.parametrize("tokens", [0, 1, 59])
def test_retry_after_is_a_whole_second_at_least(tokens: int) -> None:
    q, limits = LocalQuotas(), TenantLimits(tokens_per_min=60)
    grant(q.try_acquire("t", limits, 60, 0.0))
    if tokens:
        assert refusal(q.try_acquire("t", limits, tokens, 0.0)).retry_after_s == max(1, tokens)


class QuotaMachine(RuleBasedStateMachine):
    """Random acquires, releases (twice, sometimes) and clock steps for one tenant."""

    LIMIT = 3

    def __init__(self) -> None:
        super().__init__()
        self.q = LocalQuotas()
        self.now = 0.0
        self.open: list[QuotaGrant] = []
        self.closed: list[QuotaGrant] = []
        self.limits = TenantLimits(requests_per_min=20, tokens_per_min=500,
                                   max_concurrent=self.LIMIT)

    @rule(tokens=st.integers(0, 300))
    def acquire(self, tokens: int) -> None:
        result = self.q.try_acquire("t", self.limits, tokens, self.now)
        if isinstance(result, QuotaGrant):
            self.open.append(result)
        else:
            assert result.retry_after_s >= 1 and result.retry_after_s == int(result.retry_after_s)
            if result.reason == "tenant_concurrency":
                assert len(self.open) == self.LIMIT

    @rule(index=st.integers(0, 10), used=st.none() | st.integers(0, 300))
    def release(self, index: int, used: int | None) -> None:
        if self.open:
            g = self.open.pop(index % len(self.open))
            assert self.q.release(g, self.now, used)
            self.closed.append(g)

    @rule(index=st.integers(0, 10))
    def release_again(self, index: int) -> None:
        if self.closed:
            assert not self.q.release(self.closed[index % len(self.closed)], self.now)

    @rule(step=st.floats(0, 30))
    def tick(self, step: float) -> None:
        self.now += step

    @invariant()
    def concurrency_is_exact_and_bounded(self) -> None:
        active = self.q.active("t")
        assert 0 <= active <= self.LIMIT
        assert active == len(self.open)


TestQuotaMachine = QuotaMachine.TestCase
TestQuotaMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
