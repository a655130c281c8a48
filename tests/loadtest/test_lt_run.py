"""Runs end to end against the fake OpenAI server: contract, rejections, retries, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest
from lt_support import FakeTarget, small_config

from loadtest import report, runner
from loadtest.config import SLO, parse_mix, parse_priorities
from loadtest.errors import TargetRefused, TargetUnreachable
from loadtest.records import Outcome, RequestRecord
from loadtest.workload import plan

CLASS_KEYS = {"sent", "ok", "rejected_429", "rejected_503", "errors", "ttft_ms", "tpot_ms",
              "itl_ms", "e2el_ms", "goodput_rps", "slo_attainment"}
MS_KEYS = {"mean", "p50", "p90", "p99"}


async def test_summary_has_exactly_the_contract_keys(fake: FakeTarget, tmp_path: Path) -> None:
    config = small_config(fake.url, tmp_path, mix=parse_mix("interactive=0.5,batch=0.5"))
    result = await runner.run(config)
    summary = report.write_results(result, tmp_path)
    on_disk = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert on_disk == orjson.loads(orjson.dumps(summary))
    assert set(on_disk["per_class"]) == {"interactive", "batch"}
    for row in on_disk["per_class"].values():
        assert set(row) == CLASS_KEYS
        assert all(set(row[k]) == MS_KEYS for k in CLASS_KEYS if k.endswith("_ms"))
    assert set(on_disk["overall"]) == CLASS_KEYS | {"output_tokens_per_s", "request_throughput"}
    assert set(on_disk["config"]) == {"rps", "duration_s", "mix", "dataset", "url", "seed"}
    overall = on_disk["overall"]
    assert overall["sent"] == overall["ok"] == 20
    assert overall["output_tokens_per_s"] == pytest.approx(overall["request_throughput"] * 4)
    assert overall["slo_attainment"] == 1.0  # SLOs from the fake's GET /v1/sla
    assert on_disk["run"]["slo_source"] == "GET /v1/sla"


async def test_request_bodies(fake: FakeTarget, tmp_path: Path) -> None:
    config = small_config(fake.url, tmp_path, num_requests=3, mix=parse_mix("batch=1"))
    await runner.run(config)
    probe, *sent = fake.behaviour.seen
    assert probe["max_tokens"] == 1 and probe["service_tier"] == "batch"
    for body in sent:
        assert body["model"] == "fake-model"  # the first of GET /v1/models
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["ignore_eos"] is True and body["max_tokens"] == 4
        assert body["service_tier"] == "batch"


async def test_priorities_are_sent_per_class(fake: FakeTarget, tmp_path: Path) -> None:
    config = small_config(fake.url, tmp_path, num_requests=20,
                          mix=parse_mix("interactive=0.5,batch=0.5"),
                          priorities=parse_priorities("interactive=0,batch=2"))
    await runner.run(config)
    sent = [b for b in fake.behaviour.seen if b["max_tokens"] == 4]  # not the probes
    assert len(sent) == 20
    assert {(b["service_tier"], b["priority"]) for b in sent} == {("interactive", 0),
                                                                  ("batch", 2)}


async def test_latencies_match_the_servers_delays(fake: FakeTarget, tmp_path: Path) -> None:
    fake.behaviour.ttft_s, fake.behaviour.itl_s = 0.05, 0.01
    result = await runner.run(small_config(fake.url, tmp_path, num_requests=10, rps=50.0))
    for r in result.measured:
        assert r.outcome is Outcome.OK and r.output_tokens == 4 and len(r.itl_s) == 3
        assert r.ttft_s is not None and r.e2el_s is not None
        # lower bounds only: the server sleeps at least this long, the machine may add more
        assert r.ttft_s >= 0.05 and r.e2el_s >= 0.05 + 3 * 0.01
        assert r.e2el_s == pytest.approx(r.ttft_s + sum(r.itl_s))
        assert r.tpot_s == pytest.approx((r.e2el_s - r.ttft_s) / 3)


async def test_rejections_are_counted_per_class(fake: FakeTarget, tmp_path: Path) -> None:
    fake.behaviour.reject["batch"] = (429, "2", "queue_full")
    config = small_config(fake.url, tmp_path, num_requests=40,
                          mix=parse_mix("interactive=0.5,batch=0.5"))
    summary = report.build_summary(await runner.run(config))
    batch = summary["per_class"]["batch"]
    assert batch["rejected_429"] == batch["sent"] > 0 and batch["ok"] == 0
    assert batch["slo_attainment"] == 0.0
    detail = summary["detail"]["per_class"]["batch"]
    assert detail["retry_after_s"] == {"mean": 2.0, "max": 2.0}
    assert detail["reject_reasons"] == {"queue_full": batch["sent"]}
    assert summary["per_class"]["interactive"]["rejected_429"] == 0


async def test_retry_honours_retry_after(fake: FakeTarget, tmp_path: Path) -> None:
    fake.behaviour.reject_first = 3  # Retry-After: 0
    result = await runner.run(small_config(fake.url, tmp_path, num_requests=5, rps=5.0,
                                           retry=3))
    assert all(r.outcome is Outcome.OK for r in result.measured)
    assert sum(r.attempts - 1 for r in result.measured) == 3


async def test_retries_run_out(fake: FakeTarget, tmp_path: Path) -> None:
    fake.behaviour.reject_first = 100
    result = await runner.run(small_config(fake.url, tmp_path, num_requests=3, rps=5.0,
                                           retry=1))
    assert [r.outcome for r in result.measured] == [Outcome.REJECTED_429] * 3
    assert all(r.attempts == 2 and r.retry_after_s == 0 for r in result.measured)


async def test_503_counts_separately(fake: FakeTarget, tmp_path: Path) -> None:
    fake.behaviour.reject["standard"] = (503, "1", "queue_timeout")
    config = small_config(fake.url, tmp_path, num_requests=4, mix=parse_mix("standard=1"))
    summary = report.build_summary(await runner.run(config))
    assert summary["overall"]["rejected_503"] == 4


async def test_broken_streams_are_errors(fake: FakeTarget, tmp_path: Path) -> None:
    fake.behaviour.fail_after_tokens = 2
    result = await runner.run(small_config(fake.url, tmp_path, num_requests=3))
    assert all(r.outcome is Outcome.ERROR and "engine died" in r.error for r in result.measured)


async def test_no_usage_counts_token_events(fake: FakeTarget, tmp_path: Path) -> None:
    fake.behaviour.usage = False
    result = await runner.run(small_config(fake.url, tmp_path, num_requests=3))
    assert [r.output_tokens for r in result.measured] == [4, 4, 4]


async def test_chat_role_event_does_not_stop_the_clock(fake: FakeTarget, tmp_path: Path) -> None:
    fake.behaviour.chat_role_first, fake.behaviour.ttft_s = True, 0.05
    result = await runner.run(small_config(fake.url, tmp_path, num_requests=3,
                                           endpoint="chat"))
    assert all(r.ttft_s >= 0.05 and r.output_tokens == 4 for r in result.measured)  # type: ignore[operator]
    assert fake.behaviour.seen[-1]["messages"][0]["role"] == "user"


async def test_max_concurrency_caps_in_flight(fake: FakeTarget, tmp_path: Path) -> None:
    fake.behaviour.ttft_s = 0.03
    result = await runner.run(small_config(fake.url, tmp_path, num_requests=12,
                                           rps=float("inf"), max_concurrency=2))
    events = sorted([(r.send_s, 1) for r in result.records] +
                    [(r.done_s, -1) for r in result.records])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak <= 2


async def test_warmup_is_excluded_but_recorded(fake: FakeTarget, tmp_path: Path) -> None:
    result = await runner.run(small_config(fake.url, tmp_path, num_requests=10,
                                           warmup_requests=4))
    summary = report.write_results(result, tmp_path)
    assert summary["overall"]["sent"] == 10 and summary["run"]["warmup_requests"] == 4
    rows = list(csv.DictReader((tmp_path / "requests.csv").open()))
    assert [row["phase"] for row in rows] == ["warmup"] * 4 + ["measured"] * 10


async def test_without_sla_route_goodput_is_empty_and_said(fake: FakeTarget,
                                                           tmp_path: Path) -> None:
    fake.behaviour.sla = None
    summary = report.build_summary(await runner.run(small_config(fake.url, tmp_path)))
    assert summary["overall"]["goodput_rps"] is None
    assert any("no SLOs" in note for note in summary["run"]["notes"])
    with_flag = report.build_summary(await runner.run(
        small_config(fake.url, tmp_path, slos=(("*", SLO(ttft_ms=10_000)),))))
    assert with_flag["overall"]["slo_attainment"] == 1.0


async def test_unknown_model_fails_before_the_run(fake: FakeTarget, tmp_path: Path) -> None:
    with pytest.raises(TargetRefused, match="404: model 'nope' not found"):
        await runner.run(small_config(fake.url, tmp_path, model="nope"))
    assert fake.behaviour.seen[-1]["max_tokens"] == 1  # only the probe went out


async def test_dead_target(tmp_path: Path) -> None:
    from loadtest.launcher import free_port

    with pytest.raises(TargetUnreachable, match="cannot reach"):
        await runner.run(small_config(f"http://127.0.0.1:{free_port()}", tmp_path))


def test_a_starved_client_says_so() -> None:
    from loadtest.runner import _lag_notes

    def record(i: int, lag: float) -> RequestRecord:
        return RequestRecord(i, "a", False, float(i), i + lag, i + 1.0, Outcome.OK, 200)

    assert _lag_notes([record(i, 0.0001) for i in range(100)]) == []
    notes = _lag_notes([record(i, 0.0001 if i % 10 else 0.5) for i in range(100)])
    assert len(notes) == 1 and "fell behind" in notes[0]


async def test_disconnect_fraction_hangs_up_mid_stream(fake: FakeTarget, tmp_path: Path) -> None:
    fake.behaviour.itl_s = 0.02
    config = small_config(fake.url, tmp_path, num_requests=30, disconnect_fraction=0.5)
    result = await runner.run(config)
    planned = {r.index: r.disconnect_after for r in plan(config).requests}
    cancelled = [r for r in result.measured if r.outcome is Outcome.CANCELLED]
    assert 5 <= len(cancelled) <= 25  # about half of 30, fixed by the seed
    for r in result.measured:
        hangup = planned[r.index]
        if hangup is None:
            assert r.outcome is Outcome.OK and r.output_tokens == 4
        else:
            # strictly inside the stream: after the first token, before the last
            assert 1 <= hangup <= 3
            assert r.outcome is Outcome.CANCELLED and r.output_tokens == hangup
    # the server saw those clients leave: it finished only the streams nobody dropped
    assert len(fake.behaviour.log) == len(result.measured) - len(cancelled)
    summary = report.build_summary(result)
    assert summary["detail"]["overall"]["cancelled"] == len(cancelled)
    assert summary["overall"]["errors"] == 0
