"""What happened to each request: the raw data every statistic is computed from.

All times are seconds on the run's clock (``time.perf_counter()`` minus the run's start).
Latencies follow vLLM's ``benchmarks/serve.py``: TTFT is the first token event minus the
send time; E2EL is the *last token event* minus the send time (the trailing usage event
and ``[DONE]`` do not count); ITLs are the gaps between consecutive token events.
With ``--retry``, the send time is the first attempt's, so latencies include the
``Retry-After`` waits: what the client lived through.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    OK = "ok"
    REJECTED_429 = "rejected_429"  # shed at admission / over a tenant limit
    REJECTED_503 = "rejected_503"  # queue timeout, not ready, draining
    ERROR = "error"  # anything else: other status, broken stream, connection lost
    CANCELLED = "cancelled"  # the client hung up mid-stream on purpose (--disconnect-fraction)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request, from due time to its last byte."""

    index: int
    sla_class: str
    warmup: bool
    due_s: float  # when the arrival process wanted it sent
    send_s: float  # when it was sent (first attempt)
    done_s: float  # when its outcome was known
    outcome: Outcome
    status: int  # final HTTP status, 0 without one
    ttft_s: float | None = None
    e2el_s: float | None = None
    itl_s: tuple[float, ...] = ()
    output_tokens: int = 0  # usage.completion_tokens, else the number of token events
    prompt_tokens: int | None = None  # usage.prompt_tokens, else the planned count if exact
    attempts: int = 1
    retry_after_s: float | None = None  # the last Retry-After seen
    reject_reason: str = ""  # X-Reject-Reason of the last rejection
    error: str = ""

    @property
    def tpot_s(self) -> float | None:
        """(E2EL - TTFT) / (tokens - 1); None for failures and 1-token outputs."""
        if self.outcome is not Outcome.OK or self.output_tokens <= 1:
            return None
        assert self.ttft_s is not None and self.e2el_s is not None
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def token_times_s(self) -> list[float]:
        """When each token event arrived, on the run's clock."""
        if self.ttft_s is None:
            return []
        times = [self.send_s + self.ttft_s]
        for gap in self.itl_s:
            times.append(times[-1] + gap)
        return times


class Tally:
    """Live counts for the progress bar and the monitor; written by the send loop only."""

    __slots__ = ("cancelled", "done", "errors", "ok", "rejected", "sent")

    def __init__(self) -> None:
        self.sent = self.done = self.ok = self.rejected = self.errors = self.cancelled = 0

    @property
    def in_flight(self) -> int:
        return self.sent - self.done

    def count(self, record: RequestRecord) -> None:
        self.done += 1
        if record.outcome is Outcome.OK:
            self.ok += 1
        elif record.outcome is Outcome.ERROR:
            self.errors += 1
        elif record.outcome is Outcome.CANCELLED:
            self.cancelled += 1
        else:
            self.rejected += 1
