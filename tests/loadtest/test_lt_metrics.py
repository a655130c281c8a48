"""Metric math against hand-computed cases (vLLM's definitions)."""

from __future__ import annotations

import pytest

from loadtest.config import SLO
from loadtest.metrics import distribution_ms, meets, summarize, time_buckets, window
from loadtest.records import Outcome, RequestRecord
from loadtest.slos import SLOSet


def ok(index: int, cls: str, ttft: float, itl: tuple[float, ...], tokens: int,
       send: float = 0.0) -> RequestRecord:
    e2el = ttft + sum(itl)
    return RequestRecord(index, cls, False, send, send, send + e2el, Outcome.OK, 200,
                         ttft_s=ttft, e2el_s=e2el, itl_s=itl, output_tokens=tokens)


def failed(index: int, cls: str, outcome: Outcome, status: int) -> RequestRecord:
    return RequestRecord(index, cls, False, 0.0, 0.0, 0.1, outcome, status)


A = ok(0, "a", 0.1, (0.1, 0.1, 0.1, 0.1), 5)  # TPOT 0.4 / 4 = 100 ms
B = ok(1, "a", 0.2, (), 1)  # one token: no TPOT, counts as 0 for goodput
C = ok(2, "b", 0.3, (0.5, 0.5), 3)  # TPOT 500 ms
D = failed(3, "a", Outcome.REJECTED_429, 429)
E = failed(4, "b", Outcome.ERROR, 500)
RECORDS = [A, B, C, D, E]
SLOS = SLOSet({"a": SLO(ttft_ms=250, tpot_ms=200), "b": SLO(ttft_ms=250, tpot_ms=200)}, "--slo")


def test_tpot_is_vllms_formula() -> None:
    assert A.tpot_s == pytest.approx(0.1)
    assert C.tpot_s == pytest.approx(0.5)
    assert B.tpot_s is None  # 1-token output
    assert D.tpot_s is None and E.tpot_s is None


def test_distribution_uses_numpy_linear_percentiles() -> None:
    stats = distribution_ms([0.1, 0.2, 0.3])
    assert stats == pytest.approx({"mean": 200.0, "p50": 200.0, "p90": 280.0, "p99": 298.0})
    assert distribution_ms([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_overall_by_hand() -> None:
    overall = summarize(RECORDS, SLOS, duration_s=2.0)["overall"]
    assert (overall["sent"], overall["ok"], overall["rejected_429"], overall["rejected_503"],
            overall["errors"]) == (5, 3, 1, 0, 1)
    assert overall["ttft_ms"] == pytest.approx({"mean": 200, "p50": 200, "p90": 280, "p99": 298})
    assert overall["tpot_ms"] == pytest.approx({"mean": 300, "p50": 300, "p90": 460, "p99": 496})
    # ITLs pooled over requests: 100 x4, 500 x2
    assert overall["itl_ms"] == pytest.approx(
        {"mean": 1400 / 6, "p50": 100, "p90": 500, "p99": 500})
    assert overall["e2el_ms"]["mean"] == pytest.approx((500 + 200 + 1300) / 3)
    assert overall["e2el_ms"]["p50"] == pytest.approx(500)
    assert overall["request_throughput"] == pytest.approx(3 / 2)
    assert overall["output_tokens_per_s"] == pytest.approx((5 + 1 + 3) / 2)
    # good: A and B (1-token TPOT counts as 0); C misses TPOT; D, E are not ok
    assert overall["goodput_rps"] == pytest.approx(2 / 2)
    assert overall["slo_attainment"] == pytest.approx(2 / 5)


def test_per_class_by_hand() -> None:
    per_class = summarize(RECORDS, SLOS, duration_s=2.0)["per_class"]
    a, b = per_class["a"], per_class["b"]
    assert (a["sent"], a["ok"], a["rejected_429"], a["errors"]) == (3, 2, 1, 0)
    assert (b["sent"], b["ok"], b["rejected_429"], b["errors"]) == (2, 1, 0, 1)
    assert a["tpot_ms"]["mean"] == pytest.approx(100)  # B has no TPOT sample
    assert a["goodput_rps"] == pytest.approx(1.0) and a["slo_attainment"] == pytest.approx(2 / 3)
    assert b["goodput_rps"] == 0 and b["slo_attainment"] == 0


def test_no_slos_leaves_goodput_empty() -> None:
    summary = summarize(RECORDS, SLOSet({}, "none"), duration_s=2.0)
    assert summary["overall"]["goodput_rps"] is None
    assert summary["per_class"]["a"]["slo_attainment"] is None


def test_one_token_only_run() -> None:
    records = [ok(i, "a", 0.05, (), 1) for i in range(4)]
    overall = summarize(records, SLOSet({"a": SLO(tpot_ms=1)}, "--slo"), 1.0)["overall"]
    assert overall["tpot_ms"]["p50"] is None and overall["itl_ms"]["mean"] is None
    assert overall["goodput_rps"] == 4.0  # TPOT bound holds: 1-token TPOT is 0


def test_all_rejected_run() -> None:
    records = [failed(i, "a", Outcome.REJECTED_503, 503) for i in range(3)]
    overall = summarize(records, SLOS, 1.0)["overall"]
    assert overall["rejected_503"] == 3 and overall["ok"] == 0
    assert overall["ttft_ms"]["p99"] is None
    assert overall["request_throughput"] == 0 and overall["slo_attainment"] == 0


def test_meets_checks_every_bound() -> None:
    assert meets(A, SLO(ttft_ms=100, tpot_ms=100, e2el_ms=500))  # bounds are inclusive
    assert not meets(A, SLO(e2el_ms=499))
    assert not meets(D, SLO())


def test_window_and_buckets() -> None:
    records = [ok(0, "a", 0.5, (0.5,), 2, send=0.0), ok(1, "a", 0.2, (), 1, send=1.4)]
    assert window(records, 0.0) == pytest.approx(1.6)
    buckets = time_buckets(records, end_s=2.0, width_s=1.0)
    assert list(buckets["output_tokens_per_s"]) == [1.0, 2.0]  # tokens at 0.5 | 1.0, 1.6
    # in flight: request 0 over [0, 1), request 1 over [1.4, 1.6)
    assert list(buckets["in_flight"]) == pytest.approx([1.0, 0.2])
