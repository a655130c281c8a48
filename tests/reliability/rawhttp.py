"""Bytes-exact HTTP/1.1 for tests that must send what no client library will:
CR/LF and control bytes in headers, invalid UTF-8, broken framing."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; the last value wins
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


def request_bytes(method: str, path: str, body: bytes = b"",
                  headers: tuple[tuple[bytes, bytes], ...] = (),
                  content_type: bytes | None = b"application/json") -> bytes:
    """One request with ``Connection: close`` and a correct Content-Length."""
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: gateway", b"Connection: close"]
    if content_type is not None:
        head.append(b"Content-Type: " + content_type)
    head += [name + b": " + value for name, value in headers]
    if method in ("POST", "PUT") or body:
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def send(url: str, raw: bytes, timeout: float = 30.0) -> RawResponse:
    """Send ``raw`` as is and read the response until the server closes.

    A server that neither answers nor closes within ``timeout`` fails the
    caller with ``TimeoutError``: a hang is a bug too.
    """
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body)
