"""One frozen description of a run, parsed once at the edge (the CLI) and passed down.

A ``RunConfig`` plus its seed determines the workload completely: the same config sent to
two servers sends byte-identical requests at identical offsets (``compare`` relies on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from loadtest.errors import UsageError

Endpoint = Literal["completions", "chat"]
DatasetKind = Literal["random", "chat", "jsonl"]
DEFAULT_CLASS = "default"  # label for requests sent without a service_tier


@dataclass(frozen=True, slots=True)
class Length:
    """A token count, fixed (``low == high``) or drawn uniformly from ``[low, high]``."""

    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> Length:
        """``"256"`` or ``"128:512"``."""
        try:
            parts = [int(p) for p in text.split(":")]
        except ValueError:
            raise UsageError(f"bad length {text!r}: expected N or LOW:HIGH") from None
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or parts[0] < 1 or parts[1] < parts[0]:
            raise UsageError(f"bad length {text!r}: expected N or LOW:HIGH with 1 <= LOW <= HIGH")
        return cls(parts[0], parts[1])

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """Where prompts come from and how long requests are."""

    kind: DatasetKind = "random"
    path: Path | None = None  # the JSONL file when kind == "jsonl"
    input_len: Length = Length(256, 256)
    output_len: Length = Length(64, 64)
    tokenizer: Path | None = None  # local tokenizer dir; None = byte-length estimate

    def describe(self) -> str:
        if self.kind == "jsonl":
            return str(self.path)
        return f"{self.kind} in={self.input_len} out={self.output_len}"


@dataclass(frozen=True, slots=True)
class SLO:
    """Per-request service-level objectives of one class, in milliseconds (None = no bound).

    A request is *good* when every bound it has holds (vLLM's goodput definition:
    ``ttft <= ttft_ms``, ``tpot <= tpot_ms`` with TPOT taken as 0 for 1-token outputs,
    ``e2el <= e2el_ms``).
    """

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    @property
    def empty(self) -> bool:
        return self.ttft_ms is None and self.tpot_ms is None and self.e2el_ms is None

    def as_dict(self) -> dict[str, float | None]:
        return {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "e2el_ms": self.e2el_ms}


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything one load-test run needs. Defaults match the CLI's."""

    url: str = "http://127.0.0.1:8000"
    rps: float = 10.0
    duration_s: float | None = 30.0  # exactly one of duration_s / num_requests is set
    num_requests: int | None = None
    burstiness: float = 1.0
    max_concurrency: int | None = None
    mix: tuple[tuple[str, float], ...] = ((DEFAULT_CLASS, 1.0),)
    dataset: DatasetSpec = DatasetSpec()
    endpoint: Endpoint = "completions"
    model: str | None = None
    api_key: str | None = None
    seed: int = 0
    warmup_requests: int | None = None  # overrides warmup_s when set
    warmup_s: float = 2.0
    slos: tuple[tuple[str, SLO], ...] = ()  # from --slo; "*" applies to every class
    retry: int = 0
    retry_max_wait_s: float = 30.0
    request_timeout_s: float = 600.0
    ignore_eos: bool = True
    out: Path = Path("results/run")
    label: str = ""
    progress: bool = True
    plots: bool = True
    monitor_interval_s: float = 1.0  # 0 = no resource monitor
    extra_body: tuple[tuple[str, object], ...] = field(default=())
    # --priority: vLLM's request `priority` per class, for plain vLLM servers run with
    # --scheduling-policy priority (the gateway sets it from its own class config).
    priorities: tuple[tuple[str, int], ...] = ()
    # --disconnect-fraction: this share of requests hangs up mid-stream after a random
    # number of tokens (a soak's impatient clients); recorded as ``cancelled``.
    disconnect_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not (self.rps > 0):
            raise UsageError("--rps must be > 0 (inf sends everything at once)")
        if not (self.burstiness > 0):
            raise UsageError("--burstiness must be > 0")
        if (self.duration_s is None) == (self.num_requests is None):
            raise UsageError("give exactly one of --duration and --num-requests")
        if self.duration_s is not None and (
            not math.isfinite(self.duration_s) or self.duration_s <= 0 or math.isinf(self.rps)
        ):
            raise UsageError("--duration needs a finite --rps and a positive finite duration")
        if self.num_requests is not None and self.num_requests < 1:
            raise UsageError("--num-requests must be >= 1")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise UsageError("--max-concurrency must be >= 1")
        if self.retry < 0:
            raise UsageError("--retry must be >= 0")
        if not 0.0 <= self.disconnect_fraction < 1.0:
            raise UsageError("--disconnect-fraction must be in [0, 1)")

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.mix)

    @property
    def sends_service_tier(self) -> bool:
        """A plain run (no --mix) sends no service_tier: the server picks its default."""
        return self.classes != (DEFAULT_CLASS,)

    def with_(self, **changes: object) -> RunConfig:
        return replace(self, **changes)  # type: ignore[arg-type]


def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    """``"interactive=0.2,batch=0.8"`` -> shares normalised to sum 1, order kept."""
    pairs: list[tuple[str, float]] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, share = item.partition("=")
        try:
            value = float(share) if sep else 1.0
        except ValueError:
            raise UsageError(f"bad --mix item {item!r}: expected CLASS=SHARE") from None
        if not name or not math.isfinite(value) or value <= 0:
            raise UsageError(f"bad --mix item {item!r}: expected CLASS=SHARE with SHARE > 0")
        if name in (n for n, _ in pairs):
            raise UsageError(f"class {name!r} appears twice in --mix")
        pairs.append((name, value))
    if not pairs:
        raise UsageError("--mix is empty")
    total = sum(v for _, v in pairs)
    return tuple((n, v / total) for n, v in pairs)


def parse_priorities(text: str) -> tuple[tuple[str, int], ...]:
    """``"interactive=0,batch=2"`` -> per-class vLLM priorities (lower runs first)."""
    pairs: list[tuple[str, int]] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            number = int(value)
        except ValueError:
            number = None
        if not name or not sep or number is None:
            raise UsageError(f"bad --priority item {item!r}: expected CLASS=INT")
        pairs.append((name, number))
    if not pairs:
        raise UsageError("--priority is empty")
    return tuple(pairs)


def parse_slo(text: str) -> tuple[str, SLO]:
    """``"[CLASS:]ttft=MS,tpot=MS,e2el=MS"``; without CLASS it applies to every class."""
    scope, sep, body = text.rpartition(":")
    cls = scope if sep else "*"
    bounds: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, _, value = item.partition("=")
        if key not in ("ttft", "tpot", "e2el"):
            raise UsageError(f"bad --slo {text!r}: keys are ttft, tpot, e2el (milliseconds)")
        try:
            bounds[key] = float(value)
        except ValueError:
            raise UsageError(f"bad --slo {text!r}: {value!r} is not a number") from None
    if not bounds:
        raise UsageError(f"bad --slo {text!r}: expected [CLASS:]ttft=MS,tpot=MS")
    return cls, SLO(bounds.get("ttft"), bounds.get("tpot"), bounds.get("e2el"))
