"""``python -m gateway``'s listen-address rule for local development mode."""

from __future__ import annotations

import pytest

from gateway.__main__ import is_loopback, main


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False),
    ("example.com", False), ("localhost.example.com", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_open_gateway_refuses_a_public_address(capsys: pytest.CaptureFixture[str]) -> None:
    # The embedded default has no keys: it exits before building or starting anything.
    assert main(["--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on '0.0.0.0'" in err and "auth.keys" in err
