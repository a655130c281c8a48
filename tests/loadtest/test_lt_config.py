"""Parsing of the workload flags into the frozen config."""

from __future__ import annotations

import pytest

from loadtest.config import SLO, Length, RunConfig, parse_mix, parse_priorities, parse_slo
from loadtest.errors import UsageError
from loadtest.slos import parse_sla, resolve


def test_mix_is_normalised_and_ordered() -> None:
    assert parse_mix("interactive=1,batch=3") == (("interactive", 0.25), ("batch", 0.75))
    assert parse_mix("solo") == (("solo", 1.0),)


@pytest.mark.parametrize("bad", ["", "a=0", "a=x", "a=1,a=2", "=1", "a=nan"])
def test_bad_mix(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_mix(bad)


def test_lengths() -> None:
    assert Length.parse("256") == Length(256, 256)
    assert Length.parse("128:512") == Length(128, 512)
    for bad in ("0", "5:4", "a", "1:2:3"):
        with pytest.raises(UsageError):
            Length.parse(bad)


def test_priorities() -> None:
    assert parse_priorities("interactive=0, batch=2") == (("interactive", 0), ("batch", 2))
    for bad in ("", "interactive", "batch=high", "=1"):
        with pytest.raises(UsageError):
            parse_priorities(bad)


def test_slo_flags() -> None:
    assert parse_slo("ttft=500,tpot=50") == ("*", SLO(500, 50, None))
    assert parse_slo("batch:e2el=60000") == ("batch", SLO(None, None, 60000))
    with pytest.raises(UsageError):
        parse_slo("latency=5")


def test_run_config_validation() -> None:
    with pytest.raises(UsageError):
        RunConfig(duration_s=10, num_requests=10)
    with pytest.raises(UsageError):
        RunConfig(rps=float("inf"))  # a duration needs a finite rate
    assert RunConfig(rps=float("inf"), duration_s=None, num_requests=5).num_requests == 5
    assert not RunConfig().sends_service_tier


def test_slo_precedence() -> None:
    served = parse_sla({"classes": [{"name": "interactive", "ttft_target_ms": 1000},
                                    {"name": "batch", "tpot_target_ms": 0}]})
    assert served == {"interactive": SLO(1000, None, None)}  # zero targets are no targets
    from_server = resolve([], served, ["interactive", "batch"])
    assert from_server.source == "GET /v1/sla" and from_server.of("batch") is None
    flags = resolve([("*", SLO(ttft_ms=5)), ("batch", SLO(tpot_ms=7))], served,
                    ["interactive", "batch"])
    assert flags.of("interactive") == SLO(5) and flags.of("batch") == SLO(tpot_ms=7)
    default = resolve([], served, ["default"], default_class="interactive")
    assert default.of("default") == SLO(1000)
    assert resolve([], None, ["a"]).source == "none"
