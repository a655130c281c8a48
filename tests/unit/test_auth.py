"""API keys: hashing, the config's auth section (with file:line errors), the key
ring (constant-time compare), class clamping, and the hash CLI."""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import subprocess
import sys

import pytest

from gateway.auth import ANONYMOUS, KeyRing, hash_key, main
from gateway.classes import resolve_class
from gateway.config import ConfigError, parse_config
from gateway.errors import Forbidden, InvalidRequest, Unauthorized
from scheduler.quota import TenantLimits

ACME, BETA, ADMIN = "sk-acme-1", "sk-beta-2", "sk-admin-3"

BASE = """\
engines:
  - name: only
    model: demo
    classes: [interactive, standard, batch]
"""


def with_auth(auth: str) -> str:
    """``BASE`` plus an ``auth:`` section starting at line 5."""
    return BASE + "auth:\n" + auth


AUTH = f"""\
  keys:
    - hash: "{hash_key(ACME)}"
      tenant: acme
      classes: [interactive, standard]
      default_class: interactive
      requests_per_min: 60
      tokens_per_min: 6000
      max_concurrent: 2
    - hash: "{hash_key(BETA)}"
      tenant: beta
  admin_keys: ["{hash_key(ADMIN)}"]
"""


def test_hash_key_is_sha256_hex_of_the_utf8_key() -> None:
    assert hash_key("sk-é") == "sha256:" + hashlib.sha256("sk-é".encode()).hexdigest()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", hash_key("x"))


def test_auth_section_parses_and_defaults_to_development_mode() -> None:
    assert parse_config(BASE).auth.open
    config = parse_config(with_auth(AUTH))
    acme, beta = config.auth.keys
    assert (acme.tenant, acme.classes, acme.default_class) == (
        "acme", ("interactive", "standard"), "interactive")
    assert acme.limits == (60, 6000, 2) and beta.limits == (None, None, None)
    assert beta.classes is None and not config.auth.open and not config.auth.metrics_public


@pytest.mark.parametrize(("auth", "error"), [
    ('  keys:\n    - hash: "sk-plain-key"\n      tenant: a\n',
     ":7: auth.keys[0].hash: expected 'sha256:' and 64 lowercase hex digits"),
    (f'  keys:\n    - hash: "{hash_key("a")}"\n      tenant: a\n      classes: [interactiv]\n',
     ":9: auth.keys[0].classes[0]: unknown class 'interactiv' (did you mean 'interactive'?)"),
    (f'  keys:\n    - hash: "{hash_key("a")}"\n      tenant: a\n      classes: [batch]\n',
     ":7: auth.keys[0].default_class: 'standard' (the config default_class) is not among"),
    (f'  keys:\n    - hash: "{hash_key("a")}"\n      tenant: a\n      classes: []\n',
     ":9: auth.keys[0].classes: a key must allow at least one class"),
    (f'  keys:\n    - hash: "{hash_key("a")}"\n      tenant: a\n'
     f'  admin_keys: ["{hash_key("a")}"]\n',
     ":9: auth.admin_keys[0]: duplicate key hash (first at line 7)"),
    (f'  keys:\n    - hash: "{hash_key("a")}"\n      tenant: t\n      max_concurrent: 1\n'
     f'    - hash: "{hash_key("b")}"\n      tenant: t\n',
     ":11: auth.keys[1].tenant: tenant 't' has other limits at auth.keys[0] (line 7)"),
    ('  keys:\n    - tenant: a\n', ":7: auth.keys[0].hash: required key is missing"),
    ('  keys:\n    - hash: x\n      tenant: a\n      requests_per_min: 0\n',
     ":9: auth.keys[0].requests_per_min: expected int >= 1"),
    ('  metrics_publik: true\n', ":6: auth.metrics_publik: unknown key (did you mean"),
])
def test_auth_errors_name_the_line_and_key(auth: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_auth(auth), "gw.yaml")
    assert str(info.value).startswith("gw.yaml" + error), str(info.value)


def ring() -> KeyRing:
    return KeyRing(parse_config(with_auth(AUTH)))


def test_keys_map_to_their_tenant_classes_default_and_limits() -> None:
    keys = ring()
    acme = keys.authenticate(f"Bearer {ACME}")
    assert (acme.tenant, acme.default_class, acme.admin) == ("acme", "interactive", False)
    assert acme.classes == {"interactive", "standard"}
    assert acme.limits == TenantLimits(60, 6000, 2)
    beta = keys.authenticate(f"bearer   {BETA} ")
    assert beta.classes == {"interactive", "standard", "batch"}
    assert beta.default_class == "standard" and beta.limits.unlimited
    admin = keys.authenticate(f"Bearer {ADMIN}")
    assert admin.admin and admin.classes == frozenset()


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"Basic {ACME}", ACME,
                                    "Bearer sk-wrong", f"Bearer {ACME}x"])
def test_missing_or_bad_keys_are_401_invalid_api_key(header: str | None) -> None:
    with pytest.raises(Unauthorized) as info:
        ring().authenticate(header)
    body = info.value.to_body()["error"]
    assert info.value.status == 401 and body["code"] == "invalid_api_key"
    assert body["type"] == "authentication_error"
    assert info.value.headers["WWW-Authenticate"] == "Bearer"
    assert ACME not in info.value.message


def test_the_final_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def recording(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    keys = ring()
    keys.authenticate(f"Bearer {ACME}")
    assert calls == [(hash_key(ACME), hash_key(ACME))]
    with pytest.raises(Unauthorized):
        keys.authenticate("Bearer sk-unknown")
    assert len(calls) == 2  # an unknown key is compared too (against a dummy)


def test_development_mode_lets_everyone_in_as_anonymous() -> None:
    keys = KeyRing(parse_config(BASE))
    assert keys.open and keys.metrics_public
    who = keys.authenticate(None)
    assert who.tenant == ANONYMOUS and who.admin and who.limits.unlimited
    assert who.classes == {"interactive", "standard", "batch"}


def test_class_is_clamped_to_the_key() -> None:
    config = parse_config(with_auth(AUTH))
    acme = ring().authenticate(f"Bearer {ACME}")

    def resolve(tier: str | None, header: str | None = None) -> str:
        return resolve_class(config.classes, acme.default_class, tier, header,
                             acme.classes).name

    assert resolve(None) == "interactive"  # the key's default, not the config's
    assert resolve("auto") == "interactive"
    assert resolve("standard") == "standard"
    assert resolve(None, "Standard") == "standard"
    with pytest.raises(Forbidden) as info:
        resolve("batch")
    assert info.value.status == 403 and info.value.param == "service_tier"
    assert info.value.to_body()["error"]["code"] == "class_not_allowed"
    with pytest.raises(Forbidden) as info:
        resolve(None, "batch")
    assert info.value.param == "X-SLA-Class"
    with pytest.raises(InvalidRequest):
        resolve("nonsense")  # unknown stays a 400, before any permission question


def test_hash_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["hash", "sk-x"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("sk-x")
    monkeypatch.setattr(sys, "stdin", io.StringIO("sk-from-stdin\n"))
    assert main(["hash", "-"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("sk-from-stdin")


def test_hash_cli_runs_as_a_module() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway.auth", "hash", "sk-x"],
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == hash_key("sk-x")
