"""Token coalescing: streams that fall behind get fewer, larger SSE events.

Every SSE event costs the gateway a JSON render and a socket write, whatever
it carries; at high concurrency that per-event cost, not the engine, bounds
throughput. ``Coalesced`` wraps a stream's deltas: the first token always goes
out alone and at once (time to first token is never traded away); after it,
while the stream is *behind* — its socket holds unsent bytes (the client reads
slower than we write) or the event loop lags past ``LAG_THRESHOLD_S`` (the
gateway's CPU is saturated) — consecutive deltas of the same choice are merged
into one, as OpenAI clients accept multi-token deltas. A merged delta keeps
token ids, text and logprobs in order and the last finish reason; a delta that
finishes its choice, or one of another choice, ends the merge at once.

A held delta waits for the next one from the engine (at most ``MAX_MERGE`` of
them): under the conditions above its bytes would have waited in a socket
buffer or a busy loop anyway. ``SLAGATE_COALESCE=0`` in the environment turns
coalescing off (for A/B benchmarks).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator, Callable

from engines.protocol import TokenDelta

# Loop lag past this means the loop is saturated: merge. About one pass over a
# hundred busy streams; far above an idle loop's lag (tens of microseconds). At
# 5 ms, 256 zero-cost streams on a quiet core never merged; at 2 ms they did.
LAG_THRESHOLD_S = 0.002
# How often the lag probe runs (one timer per event loop).
LAG_PROBE_INTERVAL_S = 0.005
# Most deltas merged into one event: bounds how long a token can be held.
MAX_MERGE = 64

ENABLED = os.environ.get("SLAGATE_COALESCE", "1") != "0"


class LoopLag:
    """Event-loop lag from one periodic timer: how late it runs.

    ``lagging`` also counts a tick that is overdue right now, so a loop that
    just became saturated reads as lagging before the late tick gets to run.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 interval_s: float = LAG_PROBE_INTERVAL_S,
                 threshold_s: float = LAG_THRESHOLD_S) -> None:
        self._loop = loop
        self._interval = interval_s
        self.threshold_s = threshold_s
        self.lag_s = 0.0
        self._due = loop.time() + interval_s
        self._timer = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self.lag_s = now - self._due
        self._due = now + self._interval
        self._timer = self._loop.call_at(self._due, self._tick)

    def close(self) -> None:
        self._timer.cancel()

    @property
    def lagging(self) -> bool:
        # Asked once per streamed delta: two comparisons rather than a max().
        threshold = self.threshold_s
        return self.lag_s > threshold or self._loop.time() - self._due > threshold


_probes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLag] = (
    weakref.WeakKeyDictionary())


def loop_lag() -> LoopLag:
    """The running loop's lag probe, started on first use."""
    loop = asyncio.get_running_loop()
    probe = _probes.get(loop)
    if probe is None:
        probe = _probes[loop] = LoopLag(loop)
    return probe


def stream_behind(transport: asyncio.BaseTransport | None,
                  lag: LoopLag | None = None) -> Callable[[], bool]:
    """The "behind" test of one HTTP stream: unsent bytes on its socket, or loop
    lag (the running loop's probe unless given one)."""
    lag = lag or loop_lag()
    if not isinstance(transport, asyncio.WriteTransport):
        return lambda: lag.lagging

    def behind() -> bool:
        return transport.get_write_buffer_size() > 0 or lag.lagging

    return behind


def merge(first: TokenDelta, then: TokenDelta) -> TokenDelta:
    """One delta with both deltas' output, in order (same choice)."""
    if first.logprobs is None and then.logprobs is None:
        logprobs = None
    else:
        logprobs = (first.logprobs or ()) + (then.logprobs or ())
    return TokenDelta(first.index, first.text + then.text, first.token_ids + then.token_ids,
                      then.finish_reason, logprobs)


class Coalesced:
    """The deltas of ``source``, merged while ``behind()`` (see the module docstring).

    Closing the source stays its owner's job (``aclosing`` around it).
    """

    __slots__ = ("_behind", "_carry", "_done", "_max", "_source", "_started")

    def __init__(self, source: AsyncIterator[TokenDelta], behind: Callable[[], bool],
                 max_merge: int = MAX_MERGE) -> None:
        self._source = source
        self._behind = behind
        self._max = max_merge
        self._carry: TokenDelta | None = None  # another choice's delta, next in line
        self._started = False  # the first token has gone out
        self._done = False

    def __aiter__(self) -> Coalesced:
        return self

    async def __anext__(self) -> TokenDelta:
        pending: TokenDelta | None = None
        held = 0
        while True:
            delta, self._carry = self._carry, None
            if delta is None:
                if self._done:
                    raise StopAsyncIteration
                try:
                    delta = await self._source.__anext__()
                except StopAsyncIteration:
                    self._done = True
                    if pending is None:
                        raise
                    return pending
            if pending is None:
                pending = delta
            elif delta.index != pending.index:
                self._carry = delta
                return pending
            else:
                pending = merge(pending, delta)
            if (self._started and pending.finish_reason is None and held + 1 < self._max
                    and self._behind()):
                held += 1
                continue
            if pending.token_ids:
                self._started = True
            return pending


def coalesced(source: AsyncIterator[TokenDelta],
              transport: asyncio.BaseTransport | None) -> AsyncIterator[TokenDelta]:
    """``source`` coalesced for an HTTP stream on ``transport`` (or as is, when off)."""
    if not ENABLED:
        return source
    return Coalesced(source, stream_behind(transport))
