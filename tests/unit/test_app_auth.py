"""Auth, admin routes and hot reload through the real aiohttp app (in process).

The engines never finish starting here (a simulated engine whose ``start`` waits
forever): everything under test sits in front of them, so the gateway stays
"starting" (ready 503) while keys, metrics protection and reloads are exercised.
Completions through real engines are in tests/integration/test_auth.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from engines.pool import EnginePool, PoolMember
from engines.protocol import EngineInfo
from engines.simulated import SimulatedEngine
from gateway import reload
from gateway.app import STATE, build_app
from gateway.auth import hash_key

CLIENT, ADMIN = "sk-client", "sk-admin"


class NeverStarts(SimulatedEngine):
    async def start(self) -> EngineInfo:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def config_text(ttft_ms: int = 1000, *, metrics_public: bool = False, keys: bool = True,
                max_num_seqs: int = 8, extra_class: str = "") -> str:
    auth = f"""\
auth:
  keys:
    - hash: "{hash_key(CLIENT)}"
      tenant: acme
      classes: [interactive]
  admin_keys: ["{hash_key(ADMIN)}"]
  metrics_public: {str(metrics_public).lower()}
""" if keys else ""
    return f"""\
default_class: interactive
classes:
  - name: interactive
    rank: 0
    ttft_target_ms: {ttft_ms}
{extra_class}engines:
  - name: only
    model: demo
    classes: [interactive{", extra" if extra_class else ""}]
    args: {{max_num_seqs: {max_num_seqs}}}
{auth}"""


EXTRA = "  - name: extra\n    rank: 1\n"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[TestServer, Path]]:
    path = tmp_path / "gw.yaml"
    path.write_text(config_text())
    live = reload.initial(path)
    pool = EnginePool([PoolMember(NeverStarts("only"), frozenset({"interactive"}))])
    server = TestServer(build_app(live, pool))
    await server.start_server()
    yield server, path
    await server.close()


async def call(server: TestServer, method: str, path: str, key: str | None = None,
               **kw: object) -> tuple[int, object, aiohttp.ClientResponse]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, str(server.make_url(path)), headers=headers, **kw) as resp:
        text = await resp.text()
        body: object = (await resp.json()) if resp.content_type == "application/json" else text
        return resp.status, body, resp


async def test_routes_are_protected_as_documented(gateway: tuple[TestServer, Path]) -> None:
    server, _ = gateway
    assert (await call(server, "GET", "/health/live"))[0] == 200
    assert (await call(server, "GET", "/health/ready"))[0] == 503  # starting, but open
    for path in ("/v1/models", "/v1/sla", "/metrics", "/no/such/route"):
        status, body, resp = await call(server, "GET", path)
        assert status == 401, path
        assert body["error"]["code"] == "invalid_api_key"  # type: ignore[index]
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await call(server, "GET", "/v1/models", "sk-wrong"))[0] == 401
    assert (await call(server, "GET", "/v1/models", CLIENT))[0] == 200
    assert (await call(server, "GET", "/v1/models", ADMIN))[0] == 200
    status, body, _ = await call(server, "GET", "/metrics", CLIENT)
    assert status == 403 and body["error"]["code"] == "admin_key_required"  # type: ignore[index]
    status, text, _ = await call(server, "GET", "/metrics", ADMIN)
    assert status == 200 and "gateway_config_info" in str(text)
    assert (await call(server, "POST", "/admin/reload", CLIENT))[0] == 403
    status, body, _ = await call(server, "POST", "/v1/completions", ADMIN, json={})
    assert status == 403 and body["error"]["code"] == "client_key_required"  # type: ignore[index]


async def test_refused_completions_are_counted(gateway: tuple[TestServer, Path]) -> None:
    server, _ = gateway
    for _ in range(3):
        assert (await call(server, "POST", "/v1/chat/completions", "sk-bad", json={}))[0] == 401
    registry = server.app[STATE].metrics.registry
    assert registry.get_sample_value("gateway_requests_total",
                                     {"class": "none", "outcome": "unauthorized"}) == 3


async def test_reload_applies_classes_and_keys_and_refuses_bad_files(
        gateway: tuple[TestServer, Path]) -> None:
    server, path = gateway
    state = server.app[STATE]
    status, sla, _ = await call(server, "GET", "/v1/sla", CLIENT)
    assert sla["classes"][0]["ttft_target_ms"] == 1000  # type: ignore[index]
    assert sla["config"]["generation"] == 1  # type: ignore[index]

    path.write_text(config_text(250, extra_class=EXTRA))
    status, body, _ = await call(server, "POST", "/admin/reload", ADMIN)
    assert status == 200, body
    assert body["generation"] == 2 and body["restart_required"] == []  # type: ignore[index]
    _, sla, _ = await call(server, "GET", "/v1/sla", CLIENT)
    assert [c["name"] for c in sla["classes"]] == ["interactive", "extra"]  # type: ignore[index]
    assert sla["classes"][0]["ttft_target_ms"] == 250  # type: ignore[index]
    assert state.dispatcher.scheduler.classes["interactive"].ttft_target_s == 0.25

    good = path.read_text()
    path.write_text(good.replace("rank: 0", "rank: first"))
    status, body, _ = await call(server, "POST", "/admin/reload", ADMIN)
    assert status == 400
    message = body["error"]["message"]  # type: ignore[index]
    assert "old config keeps serving" in message and f"{path}:4: classes[0].rank" in message
    _, sla, _ = await call(server, "GET", "/v1/sla", CLIENT)
    assert sla["config"]["generation"] == 2  # type: ignore[index]
    reloads = state.metrics.registry.get_sample_value
    assert reloads("gateway_config_reloads_total", {"result": "error"}) == 1
    assert reloads("gateway_config_reloads_total", {"result": "ok"}) == 1

    # Engine args need a restart: the rest applies, the response says what waits.
    path.write_text(config_text(500, max_num_seqs=99))
    status, body, _ = await call(server, "POST", "/admin/reload", ADMIN)
    assert status == 200 and body["restart_required"] == ["engines[0].args"]  # type: ignore[index]
    assert state.config.engines[0].args["max_num_seqs"] == 8
    assert state.dispatcher.scheduler.classes["interactive"].ttft_target_s == 0.5

    # A new key works at once; removing every key is refused (it would open the gateway).
    path.write_text(config_text().replace(hash_key(CLIENT), hash_key("sk-new")))
    assert (await call(server, "POST", "/admin/reload", ADMIN))[0] == 200
    assert (await call(server, "GET", "/v1/models", "sk-new"))[0] == 200
    assert (await call(server, "GET", "/v1/models", CLIENT))[0] == 401
    path.write_text(config_text(keys=False))
    status, body, _ = await call(server, "POST", "/admin/reload", ADMIN)
    assert status == 400 and "removing every key" in body["error"]["message"]  # type: ignore[index]
    assert (await call(server, "GET", "/v1/models", "sk-new"))[0] == 200


async def test_metrics_can_be_public(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(config_text(metrics_public=True))
    pool = EnginePool([PoolMember(NeverStarts("only"), frozenset({"interactive"}))])
    server = TestServer(build_app(reload.initial(path), pool))
    await server.start_server()
    try:
        status, text, _ = await call(server, "GET", "/metrics")
        assert status == 200 and 'gateway_config_info{generation="1"' in str(text)
        assert (await call(server, "GET", "/v1/sla"))[0] == 401
    finally:
        await server.close()


async def test_other_spellings_of_a_route_get_no_other_rules(
        gateway: tuple[TestServer, Path]) -> None:
    server, _ = gateway
    for path in ("/admin/%72eload", "/admin//reload", "/admin/reload/"):
        status, _, _ = await call(server, "POST", path, CLIENT)
        assert status in (403, 404), path  # never 200
    for path in ("/health/live/", "/metrics/"):
        assert (await call(server, "GET", path))[0] == 401, path  # unrouted: a key first
    status, _, _ = await call(server, "POST", "/admin/%72eload", CLIENT)
    assert status == 403  # the same route, so the same rule
    assert (await call(server, "GET", "/%68ealth/live"))[0] == 200
