"""The gateway's config file: parsed once at the edge into one frozen ``GatewayConfig``.

The file is YAML (see ``gateway.example.yaml`` for every key, its unit and default).
Validation is strict: unknown keys, duplicate keys, ``true`` or ``"16"`` for an integer,
a class nobody serves, a model path that does not exist, a misspelt vLLM engine
argument. Every refusal is one ``ConfigError`` naming the file, line and key, e.g.
``gateway.yaml:12: engines[0].args.max_num_seq: unknown engine argument (did you mean
'max_num_seqs'?)``, so an operator can fix it without reading this code.

Engine ``args`` go to vLLM's ``AsyncEngineArgs`` unchanged: only their names are checked
here (against the installed vLLM), their values are vLLM's to judge.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import msgspec
import yaml

from engines.demo_model import DEMO_MODEL_DTYPE, DEMO_MODEL_NAME
from gateway.schema import LOGPROBS_CEILING, N_CEILING, STOP_CEILING, RequestLimits

logger = logging.getLogger(__name__)

DEMO_MODEL = "demo"  # the ``model`` value that means the embedded demo model

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]+$", max_length=64)]
Millis = Annotated[float, msgspec.Meta(gt=0, le=86_400_000)]  # bounded: at most a day
Count = Annotated[int, msgspec.Meta(ge=0)]
Timeout = Annotated[float, msgspec.Meta(gt=0, le=3600)]
PerMinute = Annotated[int, msgspec.Meta(gt=0)]
KEY_HASH_PREFIX = "sha256:"
_KEY_HASH = re.compile(r"sha256:[0-9a-f]{64}")


class ConfigError(Exception):
    """A config the gateway refuses; the message reads ``file:line: key: problem``."""


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The HTTP side."""

    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000  # 0: any free port
    max_body_bytes: Annotated[int, msgspec.Meta(gt=0)] = 1 << 20  # larger bodies get 413
    drain_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0  # on SIGTERM
    max_tokens_limit: Annotated[int, msgspec.Meta(gt=0)] = 4096  # larger max_tokens get 400
    stall_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0  # no token: 504, abort
    write_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0  # stalled reader: cut
    stalls_before_restart: Annotated[int, msgspec.Meta(ge=0)] = 3  # in a row; 0: never restart
    engine_restart_backoff_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 1.0  # doubles
    engine_restart_backoff_max_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0  # cap
    # Abuse limits (aiohttp's own defaults are generous: an hour of keep-alive).
    header_timeout_s: Timeout = 20.0  # connect (or last response) -> full head; then closed
    body_timeout_s: Timeout = 30.0  # headers -> full body; then 408
    max_header_bytes: Annotated[int, msgspec.Meta(ge=256, le=65536)] = 8190  # a line or field
    max_headers: Annotated[int, msgspec.Meta(gt=0, le=1024)] = 64  # header fields per request
    max_n: Annotated[int, msgspec.Meta(ge=1, le=N_CEILING)] = 16  # choices per request
    max_stop: Annotated[int, msgspec.Meta(ge=0, le=STOP_CEILING)] = 4  # stop strings per request
    max_logprobs: Annotated[int, msgspec.Meta(ge=0, le=LOGPROBS_CEILING)] = 20  # top logprobs

    @property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(max_n=self.max_n, max_stop=self.max_stop,
                             max_logprobs=self.max_logprobs)


class SLAClass(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One service class: its place in the order, its share and its latency targets."""

    name: Name
    rank: Count  # strict order between classes, lower first
    weight: Annotated[float, msgspec.Meta(gt=0, le=1e6)] = 1.0  # share among backlogged classes
    ttft_target_ms: Millis = 500.0  # p99 time to first token
    tpot_target_ms: Millis = 100.0  # p99 time per output token after the first
    queue_timeout_ms: Millis = 2000.0  # longest wait in the gateway's queue, then 503
    max_queue: Count = 256  # queued requests; more are rejected with 429
    max_queued_tokens: Count = 262_144  # queued prompt+max_tokens; more are rejected with 429
    priority: int = 0  # vLLM's request priority (lower first) with scheduling_policy=priority

    @property
    def ttft_target_s(self) -> float:
        return self.ttft_target_ms / 1000

    @property
    def tpot_target_s(self) -> float:
        return self.tpot_target_ms / 1000

    @property
    def queue_timeout_s(self) -> float:
        return self.queue_timeout_ms / 1000


class WarmupSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What an engine runs before it is marked ready."""

    prompts: tuple[str, ...] = ()  # e.g. shared system prompts, so they sit in the prefix cache
    ladder: tuple[Annotated[int, msgspec.Meta(gt=0)], ...] = (32, 64, 128, 256, 512)


class EngineSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One vLLM engine: its model, the classes it serves and its ``AsyncEngineArgs``.

    In a loaded config ``model`` is ``"demo"`` or an absolute path, ``served_model_name``
    is never None, and ``env`` and ``args`` are read-only mappings.
    """

    name: Name
    model: Annotated[str, msgspec.Meta(min_length=1)]
    served_model_name: str | None = None  # None: "slagate-demo", or the model path's basename
    classes: Annotated[tuple[Name, ...], msgspec.Meta(min_length=1)]
    warmup: WarmupSpec = WarmupSpec()
    env: Mapping[str, str] = {}  # environment for this engine, e.g. VLLM_CPU_KVCACHE_SPACE
    args: Mapping[str, Any] = {}  # passed unchanged to vllm AsyncEngineArgs

    @property
    def is_demo(self) -> bool:
        return self.model == DEMO_MODEL


class ControllerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The adaptive per-engine concurrency limit (AIMD on engine-side TTFT)."""

    enabled: bool = True  # false: the limit stays at initial_limit
    initial_limit: Annotated[int, msgspec.Meta(gt=0)] | None = None  # None: max_num_seqs
    min_limit: Annotated[int, msgspec.Meta(gt=0)] = 2
    increase: Annotated[int, msgspec.Meta(gt=0)] = 1  # added per interval while under target
    decrease: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.75  # multiplied when over target
    window_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0  # TTFT samples considered
    interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 1.0  # one control step per
    min_samples: Annotated[int, msgspec.Meta(gt=0)] = 5  # fewer: hold
    quantile: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.95  # of engine-side TTFT
    target_fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5  # of the tightest target
    min_gain: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.05  # a cut must lower TTFT this much
    futile_hold_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0  # else undone; 0: off


class SchedulerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Dispatch knobs that are not per class."""

    promotion_age_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 10.0  # starvation guard
    reserved_slots: Count = 2  # per engine: slots under its limit kept for its most urgent class
    top_class_headroom: Count = 8  # per engine: slots past its limit its most urgent class may use
    prefill_budget_tokens: Count = 0  # per engine: lower classes' prompt tokens in prefill; 0: off
    prefix_tokens: Annotated[int, msgspec.Meta(gt=0, le=4096)] = 32  # hashed for affinity
    rate_window_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0  # drain-rate window
    controller: ControllerConfig = ControllerConfig()


def _default_classes() -> tuple[SLAClass, ...]:
    # max_queued_tokens: max_queue requests of 512 prompt tokens each.
    # fmt: off
    return (
        SLAClass(name="interactive", rank=0, weight=4, ttft_target_ms=1000, tpot_target_ms=200,
                 queue_timeout_ms=3000, max_queue=128, max_queued_tokens=128 * 512, priority=0),
        SLAClass(name="standard", rank=1, weight=2, ttft_target_ms=3000, tpot_target_ms=300,
                 queue_timeout_ms=15_000, max_queue=512, max_queued_tokens=512 * 512, priority=1),
        SLAClass(name="batch", rank=2, weight=1, ttft_target_ms=30_000, tpot_target_ms=1000,
                 queue_timeout_ms=120_000, max_queue=4096, max_queued_tokens=4096 * 512,
                 priority=2),
    )
    # fmt: on


class APIKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One client key: whose it is, which classes it may use, and its tenant's limits.

    Limits are per tenant: keys that share a tenant share one budget and must agree
    on it. ``None`` means unlimited.
    """

    hash: str  # "sha256:<64 hex>" of the key: `python -m gateway.auth hash`
    tenant: Name  # fairness, quotas and the Ticket's tenant
    classes: tuple[Name, ...] | None = None  # allowed classes; None: all
    default_class: Name | None = None  # None: the config's default_class
    requests_per_min: PerMinute | None = None
    tokens_per_min: PerMinute | None = None  # prompt + max_tokens, charged at admission
    max_concurrent: PerMinute | None = None  # requests admitted and not yet finished

    @property
    def limits(self) -> tuple[int | None, int | None, int | None]:
        return (self.requests_per_min, self.tokens_per_min, self.max_concurrent)


class AuthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """API keys. With no keys and no admin keys the gateway runs in local development
    mode: everything is open, and it refuses to listen on anything but loopback."""

    keys: tuple[APIKey, ...] = ()
    admin_keys: tuple[str, ...] = ()  # hashes of keys for /admin/* (and /metrics)
    metrics_public: bool = False  # true: /metrics needs no key (a private scrape network)

    @property
    def open(self) -> bool:
        """Local development mode: no key of any kind is configured."""
        return not self.keys and not self.admin_keys


class GatewayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole config file, validated; built by ``load_config`` or ``parse_config``."""

    server: ServerConfig = ServerConfig()
    default_class: Name = "standard"  # for requests that name none and whose key sets none
    classes: Annotated[tuple[SLAClass, ...], msgspec.Meta(min_length=1)] = _default_classes()
    engines: Annotated[tuple[EngineSpec, ...], msgspec.Meta(min_length=1)]
    scheduler: SchedulerConfig = SchedulerConfig()
    auth: AuthConfig = AuthConfig()

    def class_named(self, name: str) -> SLAClass:
        """The class called ``name``; ``KeyError`` if there is none."""
        for sla_class in self.classes:
            if sla_class.name == name:
                return sla_class
        raise KeyError(name)

    def engines_serving(self, class_name: str) -> tuple[EngineSpec, ...]:
        """The engines that may run requests of class ``class_name``, in file order."""
        return tuple(engine for engine in self.engines if class_name in engine.classes)


def load_config(path: Path) -> GatewayConfig:
    """Read and validate the file at ``path``; relative model paths are relative to it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    return parse_config(text, str(path), base_dir=path.parent)


def parse_config(
    text: str, source: str = "<string>", *, base_dir: Path | None = None
) -> GatewayConfig:
    """Validate YAML ``text``; ``source`` names it in errors, ``base_dir`` anchors paths."""
    document = _Document.parse(text, source)
    try:
        config = msgspec.convert(document.data, GatewayConfig, strict=True)
    except msgspec.ValidationError as error:
        raise document.error_from(error) from None
    return _checked(config, document, base_dir or Path.cwd(), check_engine_args=True)


def default_config() -> GatewayConfig:
    """The embedded default: the default classes and two engines on the demo model.

    ``fast`` takes the guide's low-latency profile (few sequences, small batches) for
    interactive and standard traffic; ``bulk`` its high-throughput profile for standard
    and batch. ``gateway.example.yaml`` is this, written out.
    """
    common = {
        "enable_chunked_prefill": True,
        "enable_prefix_caching": True,
        "max_model_len": 2048,
        "enforce_eager": True,
        "dtype": DEMO_MODEL_DTYPE,
    }
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    engines = (
        EngineSpec(
            name="fast",
            model=DEMO_MODEL,
            classes=("interactive", "standard"),
            env=env,
            args={"max_num_seqs": 16, "max_num_batched_tokens": 2048, **common},
        ),
        EngineSpec(
            name="bulk",
            model=DEMO_MODEL,
            classes=("standard", "batch"),
            env=env,
            args={"max_num_seqs": 64, "max_num_batched_tokens": 8192, **common},
        ),
    )
    config = GatewayConfig(engines=engines)
    return _checked(config, _Document("<default>", {}, {}), Path.cwd(), check_engine_args=False)


# -- cross-field checks ------------------------------------------------------------------

_OWN_KEYS = {"model", "served_model_name"}  # AsyncEngineArgs fields set one level up


def _checked(
    config: GatewayConfig, doc: _Document, base_dir: Path, *, check_engine_args: bool
) -> GatewayConfig:
    class_names = _unique(doc, "classes", [c.name for c in config.classes], "class")
    _unique(doc, "engines", [e.name for e in config.engines], "engine")
    if config.default_class not in class_names:
        given = ("default_class",) in doc.lines
        raise doc.error(
            ("default_class",),
            f"{config.default_class!r}{'' if given else ' (the default)'} names no class"
            f"{_hint(config.default_class, class_names)}",
            near=None if given else ("classes",),
        )
    engines = []
    for i, engine in enumerate(config.engines):
        for j, name in enumerate(engine.classes):
            if name not in class_names:
                raise doc.error(
                    ("engines", i, "classes", j),
                    f"unknown class {name!r}{_hint(name, class_names)}",
                )
            if name in engine.classes[:j]:
                raise doc.error(("engines", i, "classes", j), f"class {name!r} listed twice")
        if check_engine_args:
            _check_engine_args(doc, i, engine.args)
        engines.append(_resolved(doc, i, engine, base_dir))
    _check_shared_env(doc, engines)
    for i, sla_class in enumerate(config.classes):
        if not any(sla_class.name in engine.classes for engine in engines):
            # Without a `classes` key the defaults apply, and the fix is less obvious.
            hint = "" if ("classes",) in doc.lines else " (a default class: list `classes`)"
            raise doc.error(
                ("classes", i, "name"), f"class {sla_class.name!r} is served by no engine{hint}"
            )
    _check_auth(doc, config.auth, config.default_class, class_names)
    return msgspec.structs.replace(config, engines=tuple(engines))


def _check_auth(doc: _Document, auth: AuthConfig, default_class: str,
                class_names: set[str]) -> None:
    seen: dict[str, KeyPath] = {}
    tenants: dict[str, int] = {}
    hashes: list[tuple[KeyPath, str]] = [(("auth", "keys", i, "hash"), k.hash)
                                         for i, k in enumerate(auth.keys)]
    hashes += [(("auth", "admin_keys", i), h) for i, h in enumerate(auth.admin_keys)]
    for path, key_hash in hashes:
        if not _KEY_HASH.fullmatch(key_hash):
            raise doc.error(path, "expected 'sha256:' and 64 lowercase hex digits (the key's "
                                  "hash, from `python -m gateway.auth hash KEY`), never the key")
        if key_hash in seen:
            first_line = doc.line_of(seen[key_hash])
            raise doc.error(path, f"duplicate key hash (first at line {first_line})")
        seen[key_hash] = path
    for i, key in enumerate(auth.keys):
        allowed = key.classes if key.classes is not None else tuple(sorted(class_names))
        for j, name in enumerate(key.classes or ()):
            if name not in class_names:
                raise doc.error(("auth", "keys", i, "classes", j),
                                f"unknown class {name!r}{_hint(name, class_names)}")
        if key.classes is not None and not key.classes:
            raise doc.error(("auth", "keys", i, "classes"), "a key must allow at least one class")
        default = key.default_class or default_class
        if default not in allowed:
            given = key.default_class is not None
            raise doc.error(("auth", "keys", i, "default_class"),
                            f"{default!r}{'' if given else ' (the config default_class)'} is "
                            f"not among the key's classes {list(allowed)}",
                            near=None if given else ("auth", "keys", i))
        first = tenants.setdefault(key.tenant, i)
        if auth.keys[first].limits != key.limits:
            raise doc.error(("auth", "keys", i, "tenant"),
                            f"tenant {key.tenant!r} has other limits at auth.keys[{first}] "
                            f"(line {doc.line_of(('auth', 'keys', first))}): keys of one tenant "
                            "share its budget and must agree on it")


def _unique(doc: _Document, section: str, names: list[str], what: str) -> set[str]:
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            line = doc.line_of((section, first[name], "name"))
            raise doc.error(
                (section, i, "name"), f"duplicate {what} name {name!r} (first at line {line})"
            )
        first[name] = i
    return set(names)


def _check_shared_env(doc: _Document, engines: Sequence[EngineSpec]) -> None:
    # Every engine core is a child of this one process and inherits its environment, so
    # one variable cannot take two values: refuse here rather than surprise at start.
    first: dict[str, tuple[int, str]] = {}
    for i, engine in enumerate(engines):
        for key, value in engine.env.items():
            j, other = first.setdefault(key, (i, value))
            if other != value:
                raise doc.error(
                    ("engines", i, "env", key),
                    f"{value!r} differs from engines[{j}] ({other!r}, line "
                    f"{doc.line_of(('engines', j, 'env', key))}): engines share one environment",
                )


def _check_engine_args(doc: _Document, index: int, args: Mapping[str, Any]) -> None:
    known = _engine_arg_names()
    for key in args:
        path = ("engines", index, "args", key)
        if key in _OWN_KEYS:
            raise doc.error(path, f"set {key!r} on the engine itself, not in its args")
        if known is not None and key not in known:
            raise doc.error(path, f"unknown engine argument{_hint(key, known)}")


@functools.cache
def _engine_arg_names() -> frozenset[str] | None:
    """The installed vLLM's ``AsyncEngineArgs`` fields; None when vLLM is not installed."""
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except ImportError:
        # Without vLLM no real engine can start either; vLLM checks the args when it does.
        logger.warning("vllm is not installed: engine args are not checked")
        return None
    return frozenset(field.name for field in dataclasses.fields(AsyncEngineArgs))


def _resolved(doc: _Document, index: int, engine: EngineSpec, base_dir: Path) -> EngineSpec:
    """Absolute model path, the served name filled in, read-only mappings."""
    model = engine.model
    if not engine.is_demo:
        path = Path(model).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.exists():
            raise doc.error(("engines", index, "model"), f"no such file or directory: '{path}'")
        model = str(path.resolve())
    served = engine.served_model_name or (DEMO_MODEL_NAME if engine.is_demo else Path(model).name)
    return msgspec.structs.replace(
        engine,
        model=model,
        served_model_name=served,
        env=MappingProxyType(dict(engine.env)),
        args=MappingProxyType(dict(engine.args)),
    )


def _hint(name: str, choices: set[str] | frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- YAML with line numbers ---------------------------------------------------------------

KeyPath = tuple[str | int, ...]  # a key path into the document, e.g. ("engines", 0, "args")
_MAX_ENTRIES = 100_000  # aliases can make a small file huge ("billion laughs")
_MAX_DEPTH = 32  # ... or infinitely deep (an alias inside its own anchor)
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclasses.dataclass(frozen=True, slots=True)
class _Document:
    """Parsed YAML plus the line (1-based) of every key and list item in it."""

    source: str
    data: object
    lines: dict[KeyPath, int]

    @classmethod
    def parse(cls, text: str, source: str) -> _Document:
        loader = yaml.SafeLoader(text)
        lines: dict[KeyPath, int] = {}
        try:
            node = loader.get_single_node()
            if node is None:  # an empty file
                return cls(source, {}, lines)
            _index(loader, node, (), lines, source)
            data = loader.construct_document(node)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = mark.line + 1 if mark is not None else 1
            problem = error.problem or error.context or "invalid YAML"
            raise ConfigError(f"{source}:{line}: invalid YAML: {problem}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{source}: invalid YAML: {error}") from None
        finally:
            loader.dispose()
        return cls(source, data, lines)

    def line_of(self, path: KeyPath) -> int:
        """The line of ``path``, else of its nearest ancestor that has one (keys from
        defaults or merges), else 1."""
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: KeyPath, message: str, near: KeyPath | None = None) -> ConfigError:
        """``message`` about ``path``, at the line of ``near`` if given (a key left out)."""
        key = _dotted(path)
        line = self.line_of(path if near is None else near)
        return ConfigError(f"{self.source}:{line}: {key + ': ' if key else ''}{message}")

    def error_from(self, error: msgspec.ValidationError) -> ConfigError:
        """Translate msgspec's first error into our ``file:line: key: problem`` form."""
        text = str(error)
        match = re.fullmatch(r"(?s)(.*?)(?: - at `(key)` in `(.*)`| - at `(.*)`)?", text)
        assert match is not None  # the pattern matches any string
        message, key_error = match[1], match[2] is not None
        path = self._resolve(_parse_path(match[3] or match[4] or "$"), key_error)
        if found := re.fullmatch(r"Object contains unknown field `(.*)`", message):
            unknown = found[1]
            known = _field_names(path)
            return self.error((*path, unknown), f"unknown key{_hint(unknown, known)}")
        if found := re.fullmatch(r"Object missing required field `(.*)`", message):
            return self.error((*path, found[1]), "required key is missing")
        if key_error:
            return self.error(path, "mapping keys must be strings")
        return self.error(path, _plain(message))

    def _resolve(self, path: list[str | int | None], key_error: bool) -> KeyPath:
        """Replace msgspec's anonymous mapping key (``[...]``) by the offending key."""
        resolved: list[str | int] = []
        for part in [*path, None] if key_error else path:
            if part is not None:
                resolved.append(part)
                continue
            mapping = _get(self.data, resolved)
            if not isinstance(mapping, dict):
                break
            bad = [
                k for k, v in mapping.items() if not isinstance(k, str) or not _fits(v, resolved)
            ]
            if not bad:
                break
            resolved.append(bad[0])
        return tuple(resolved)


def _index(
    loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], source: str
) -> None:
    """Record each key's and item's line under ``path``; refuse duplicate keys."""
    if len(lines) > _MAX_ENTRIES:
        raise ConfigError(f"{source}: more than {_MAX_ENTRIES} entries (alias expansion?)")
    if len(path) > _MAX_DEPTH:
        line = node.start_mark.line + 1
        raise ConfigError(f"{source}:{line}: nested more than {_MAX_DEPTH} levels (alias loop?)")
    if isinstance(node, yaml.MappingNode):
        first: dict[object, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue  # merged keys may override; complex keys fail in conversion
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first:
                raise ConfigError(
                    f"{source}:{line}: {_dotted((*path, key))}: duplicate key "
                    f"(first at line {first[key]})"
                )
            first[key] = line
            lines[(*path, key)] = line
            _index(loader, value_node, (*path, key), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _index(loader, item, (*path, i), lines, source)


def _parse_path(text: str) -> list[str | int | None]:
    """msgspec's ``$.engines[0].env[...]`` as ``["engines", 0, "env", None]``."""
    parts: list[str | int | None] = []
    for field, index in re.findall(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]", text):
        parts.append(field if field else None if index == "..." else int(index))
    return parts


def _dotted(path: Sequence[object]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


_YAML_WORDS = {"object": "mapping", "array": "list"}


def _yaml_word(match: re.Match[str]) -> str:
    return _YAML_WORDS.get(match[0], match[0])


def _plain(message: str) -> str:
    """``Expected `int`, got `str``` as ``expected int, got str`` in YAML's words."""
    message = re.sub(r"`([^`]+)`", lambda m: re.sub(r"\w+", _yaml_word, m[1]), message)
    return message[:1].lower() + message[1:]


def _get(data: object, path: Sequence[str | int]) -> object:
    for part in path:
        data = data[part]  # type: ignore[index]
    return data


def _type_at(path: Sequence[str | int]) -> msgspec.inspect.Type:
    info: msgspec.inspect.Type = msgspec.inspect.type_info(GatewayConfig)
    for part in path:
        if isinstance(info, msgspec.inspect.UnionType):
            info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
        if isinstance(info, msgspec.inspect.StructType):
            info = next(f.type for f in info.fields if f.name == part)
        elif isinstance(info, msgspec.inspect.VarTupleType):
            info = info.item_type
        elif isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
    return info


def _field_names(path: Sequence[str | int]) -> frozenset[str]:
    info = _type_at(path)
    if isinstance(info, msgspec.inspect.StructType):
        return frozenset(f.name for f in info.fields)
    return frozenset()


def _fits(value: object, mapping_path: Sequence[str | int]) -> bool:
    """Whether ``value`` suits the value type of the mapping at ``mapping_path``."""
    mapping_type = _type_at(mapping_path)
    if isinstance(mapping_type, msgspec.inspect.DictType) and isinstance(
        mapping_type.value_type, msgspec.inspect.StrType
    ):
        return isinstance(value, str)
    return True
