"""Start a server subprocess, wait until it says it is ready, stop it: the tuner's lifecycle.

The server gets its own session (process group), its output goes to a log file, and it
is always stopped on the way out -- SIGTERM for a graceful drain, then SIGKILL to its
group if it has not exited within ``stop_timeout_s`` (vLLM engine cores are children).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import aiohttp

from loadtest.errors import LaunchFailed

POLL_S = 0.5


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _last_lines(path: Path, count: int = 3) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-count:])[-400:]


async def wait_ready(
    process: subprocess.Popen[bytes], url: str, timeout_s: float, log_path: Path
) -> None:
    """Poll ``url`` until it answers 200; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    probe_timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=probe_timeout) as session:
        while True:
            if process.poll() is not None:
                raise LaunchFailed(
                    f"exited with status {process.returncode}: {_last_lines(log_path)}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise LaunchFailed(f"not ready after {timeout_s:g} s: {_last_lines(log_path)}")
            await asyncio.sleep(POLL_S)


def stop(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """SIGTERM, wait, then SIGKILL the process group; return the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the group we created for it, nothing else
    return process.wait()


@contextlib.asynccontextmanager
async def launched(
    command: Sequence[str],
    ready_url: str,
    log_path: Path,
    ready_timeout_s: float,
    stop_timeout_s: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends; the block starts once ``ready_url`` says 200."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        try:
            process = subprocess.Popen(
                list(command), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        except OSError as exc:
            raise LaunchFailed(f"cannot start {command[0]}: {exc.strerror}") from None
        try:
            await wait_ready(process, ready_url, ready_timeout_s, log_path)
            yield process
        finally:
            stop(process, stop_timeout_s)
