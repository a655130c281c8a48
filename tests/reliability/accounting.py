"""The gateway's books must balance after every scenario.

``assert_accounts_balance(gateway)`` scrapes ``/metrics`` and ``/v1/sla`` once
the gateway has settled and checks, from counters incremented at different
points of a request's life:

- received = refused + admitted: every request that reached a generation route
  (``gateway_requests_received_total``, counted on arrival) was either answered
  without entering a queue (``gateway_requests_refused_total``, counted at its
  end) or admitted by the scheduler (``gateway_requests_admitted_total``,
  counted at admission);
- admitted = the terminal outcomes of admitted requests: every admitted
  request ended in exactly one ``gateway_requests_total`` outcome that is not
  a refusal; and in the scheduler, admitted = granted + cancelled + expired,
  granted = the sum of its release outcomes;
- nothing is left over: queue depth and granted slots at zero, no engine holds
  a request (``gateway_engine_inflight``, and the engine's own running and
  waiting counts);
- no 500: no request ended in outcome ``error``.

With a ``before`` ledger (``Ledger.read`` at the start of a scenario) it also
checks the scenario's own deltas: which outcomes it produced, and that the
completion tokens its client received equal the delta of
``gateway_tokens_total{kind="completion"}``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import requests

from tests.integration.conftest import GatewayProcess

# Scheduler counters that are not release outcomes of a granted ticket.
_NOT_RELEASES = frozenset({"submitted", "admitted", "granted", "promoted", "cancelled",
                           "expired"})


@dataclass(frozen=True)
class Ledger:
    """One consistent-enough reading of the gateway's counters and gauges."""

    received: float
    refused: Counter[str]  # by outcome
    outcomes: Counter[str]  # gateway_requests_total, by outcome
    admitted: float
    completion_tokens: float
    queue_depth: float
    granted_slots: float
    engine_inflight: float
    engine_running: float
    engine_waiting: float
    scheduler: Counter[str] = field(default_factory=Counter)  # /v1/sla counters, all classes

    @classmethod
    def read(cls, gw: GatewayProcess) -> Ledger:
        samples = _scrape(f"{gw.url}/metrics")
        sla = requests.get(f"{gw.url}/v1/sla", timeout=10).json()
        scheduler: Counter[str] = Counter()
        for c in sla["classes"]:
            scheduler.update(c["counters"])
        return cls(
            received=_sum(samples, "gateway_requests_received_total"),
            refused=_by(samples, "gateway_requests_refused_total", "outcome"),
            outcomes=_by(samples, "gateway_requests_total", "outcome"),
            admitted=_sum(samples, "gateway_requests_admitted_total"),
            completion_tokens=_sum(samples, "gateway_tokens_total", kind="completion"),
            queue_depth=_sum(samples, "gateway_queue_depth"),
            granted_slots=_sum(samples, "gateway_engine_granted"),
            engine_inflight=_sum(samples, "gateway_engine_inflight"),
            engine_running=_sum(samples, "gateway_engine_running"),
            engine_waiting=_sum(samples, "gateway_engine_waiting"),
            scheduler=scheduler,
        )

    @property
    def settled(self) -> bool:
        """Every received request has ended and nothing holds a slot."""
        return (self.received == sum(self.outcomes.values())
                and self.queue_depth == self.granted_slots == 0
                and self.engine_inflight == self.engine_running == self.engine_waiting == 0)


@dataclass(frozen=True)
class EngineLoad:
    """What the gateway and its engines hold right now, from one scrape."""

    queued: float  # tickets in the gateway's class queues
    inflight: float  # requests the gateway has on its engines
    running: float  # the engines' own counts
    waiting: float

    @classmethod
    def read(cls, gw: GatewayProcess) -> EngineLoad:
        samples = _scrape(f"{gw.url}/metrics")
        return cls(_sum(samples, "gateway_queue_depth"),
                   _sum(samples, "gateway_engine_inflight"),
                   _sum(samples, "gateway_engine_running"),
                   _sum(samples, "gateway_engine_waiting"))

    @property
    def idle(self) -> bool:
        return self.queued == self.inflight == self.running == self.waiting == 0


def wait_settled(gw: GatewayProcess, timeout: float = 10.0) -> Ledger:
    """The ledger once the gateway has settled; the last reading if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        ledger = Ledger.read(gw)
        if ledger.settled or time.monotonic() > deadline:
            return ledger
        time.sleep(0.05)


def assert_accounts_balance(
    gw: GatewayProcess,
    before: Ledger | None = None,
    *,
    outcomes: Mapping[str, int] | None = None,
    completion_tokens: int | None = None,
    timeout: float = 10.0,
) -> Ledger:
    """Assert the identities above (and, given ``before``, the scenario's deltas).

    ``outcomes``: the exact ``gateway_requests_total`` outcome deltas the
    scenario must have produced (outcomes not named must not have moved).
    ``completion_tokens``: the completion tokens the client received.
    Returns the settled ledger, usable as the next scenario's ``before``.
    """
    now = wait_settled(gw, timeout)
    refused = sum(now.refused.values())
    total = sum(now.outcomes.values())
    assert now.received == total, (
        f"received {now.received} != {total} terminal outcomes {dict(now.outcomes)}")
    assert now.received == refused + now.admitted, (
        f"received {now.received} != refused {refused} + admitted {now.admitted}")
    admitted_outcomes = now.outcomes - now.refused
    assert now.admitted == sum(admitted_outcomes.values()), (
        f"admitted {now.admitted} != terminal outcomes of admitted requests "
        f"{dict(admitted_outcomes)}")
    assert not (now.refused - now.outcomes), "a refusal without a terminal outcome"
    _assert_scheduler_balances(now.scheduler, now.admitted)
    assert now.queue_depth == 0, f"queue depth {now.queue_depth}"
    assert now.granted_slots == 0, f"granted slots {now.granted_slots}"
    assert now.engine_inflight == 0, f"engine in-flight {now.engine_inflight}"
    assert now.engine_running == now.engine_waiting == 0, (
        f"engines still running {now.engine_running} / waiting {now.engine_waiting}")
    assert now.outcomes["error"] == 0, "a request ended in a 500 (outcome error)"
    if before is not None:
        if outcomes is not None:
            delta = now.outcomes.copy()
            delta.subtract(before.outcomes)
            assert +delta == Counter(outcomes), f"outcomes {dict(+delta)} != {dict(outcomes)}"
        if completion_tokens is not None:
            counted = now.completion_tokens - before.completion_tokens
            assert counted == completion_tokens, (
                f"client received {completion_tokens} completion tokens, "
                f"gateway counted {counted}")
    return now


def _assert_scheduler_balances(counters: Counter[str], admitted: float) -> None:
    assert counters["admitted"] == admitted
    rejected = sum(v for k, v in counters.items() if k.startswith("rejected:"))
    assert counters["submitted"] == counters["admitted"] + rejected, dict(counters)
    assert counters["admitted"] == (counters["granted"] + counters["cancelled"]
                                    + counters["expired"]), dict(counters)
    releases = sum(v for k, v in counters.items()
                   if k not in _NOT_RELEASES and not k.startswith("rejected:"))
    assert counters["granted"] == releases, dict(counters)


# -- Prometheus text --------------------------------------------------------------

Sample = tuple[str, dict[str, str], float]


def _scrape(url: str) -> list[Sample]:
    text = requests.get(url, timeout=10).text
    samples: list[Sample] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, rest = series.partition("{")
        labels: dict[str, str] = {}
        for pair in rest.rstrip("}").split('",') if rest else ():
            key, _, val = pair.partition("=")
            labels[key.strip(",")] = val.strip('"')
        samples.append((name, labels, float(value)))
    return samples


def _sum(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == want for k, want in labels.items()))


def _by(samples: list[Sample], name: str, label: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for n, lab, v in samples:
        if n == name and v:
            out[lab[label]] += int(v)
    return out
