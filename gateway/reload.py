"""Config hot reload: re-read the file, build the whole new state, then swap it in.

What a reload changes: classes, ``default_class``, API keys and tenant limits, the
scheduler and controller settings, which classes each engine serves, and the
per-request ``server`` limits (body size and time, fan-out caps, ``max_tokens_limit``,
``drain_timeout_s``). What it cannot change without a restart: the engines themselves
(their ``model``, ``served_model_name``, ``env``, ``args``, ``warmup``) and the listening
socket and connection settings (``server.host``, ``port``, ``header_timeout_s``,
``max_header_bytes``, ``max_headers``). Those are kept as they run, the rest is applied,
and the reload names them in ``restart_required``. Adding, removing, renaming or
reordering engines is refused as a whole (classes could not be placed consistently), and
so is removing every API key (an open gateway must be checked to listen on loopback only,
which happens at start).

A file that does not parse or validate is refused with its ``ConfigError`` and the
old config keeps serving. In-flight requests keep the class and tenant they started
with; queued tickets keep their place (``Scheduler.reconfigure``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import msgspec

from gateway.auth import KeyRing
from gateway.config import ConfigError, GatewayConfig, default_config, parse_config

EMBEDDED = "embedded"  # the digest shown when running the embedded default

_ENGINE_RESTART_FIELDS = ("model", "served_model_name", "env", "args", "warmup")
_SERVER_RESTART_FIELDS = ("host", "port", "header_timeout_s", "max_header_bytes",
                          "max_headers")


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """The config being served and what is derived from it; swapped whole on reload."""

    config: GatewayConfig
    keyring: KeyRing
    generation: int  # 1 at start, +1 per successful reload
    digest: str  # sha256 of the file's bytes, or "embedded"
    path: Path | None  # None: the embedded default, nothing to reload


@dataclass(frozen=True, slots=True)
class Reload:
    """A validated new state, not yet applied."""

    live: LiveConfig
    restart_required: tuple[str, ...]  # keys that changed but take a restart


def initial(path: Path | None) -> LiveConfig:
    """The start-up state: the file at ``path`` or the embedded default."""
    if path is None:
        config = default_config()
        return LiveConfig(config, KeyRing(config), 1, EMBEDDED, None)
    config, digest = _load(path)
    return LiveConfig(config, KeyRing(config), 1, digest, path)


def prepare(current: LiveConfig) -> Reload:
    """Re-read ``current.path`` into a new ``LiveConfig``; ``ConfigError`` if refused."""
    if current.path is None:
        raise ConfigError("running the embedded default: no config file to reload "
                          "(start with --config FILE)")
    new, digest = _load(current.path)
    config, restart = merge_running(current.config, new, current.path)
    live = LiveConfig(config, KeyRing(config), current.generation + 1, digest, current.path)
    return Reload(live, restart)


def merge_running(running: GatewayConfig, new: GatewayConfig,
                  source: Path | str) -> tuple[GatewayConfig, tuple[str, ...]]:
    """``new`` with the parts that need a restart kept as ``running`` has them, and
    those parts' keys where they differ."""
    names = [e.name for e in running.engines]
    if [e.name for e in new.engines] != names:
        raise ConfigError(f"{source}: engines: adding, removing, renaming or reordering "
                          f"engines needs a restart (running: {names}, file: "
                          f"{[e.name for e in new.engines]})")
    if new.auth.open and not running.auth.open:
        # The listening address was only checked for an open gateway at start.
        raise ConfigError(f"{source}: auth: removing every key would open the gateway to "
                          "anyone who can reach it; that needs a restart (which checks the "
                          "address is loopback)")
    restart: list[str] = []
    engines = []
    for i, (old, fresh) in enumerate(zip(running.engines, new.engines, strict=True)):
        kept = {f: getattr(old, f) for f in _ENGINE_RESTART_FIELDS}
        restart += [f"engines[{i}].{f}" for f, v in kept.items() if getattr(fresh, f) != v]
        engines.append(msgspec.structs.replace(fresh, **kept))
    kept_server = {f: getattr(running.server, f) for f in _SERVER_RESTART_FIELDS}
    restart += [f"server.{f}" for f, v in kept_server.items() if getattr(new.server, f) != v]
    server = msgspec.structs.replace(new.server, **kept_server)
    merged = msgspec.structs.replace(new, engines=tuple(engines), server=server)
    return merged, tuple(restart)


def _load(path: Path) -> tuple[GatewayConfig, str]:
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    config = parse_config(text, str(path), base_dir=path.parent)
    return config, hashlib.sha256(raw).hexdigest()
