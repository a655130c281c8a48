"""Admission: accept or shed a ticket at arrival, in microseconds, never waiting.

A ticket is shed (429 with a computed Retry-After) when its class queue is
full, its queued tokens would pass the class budget, or the predicted wait
(work queued ahead of it ÷ the measured drain rate of its engines) is already
past its deadline: telling the client now beats a 503 after the whole wait.

The checks that need no token count (queue full, predicted wait) can run
before the prompt is tokenized (``Scheduler.precheck``): under overload most
sheds are decided then, and a shed request costs no tokenization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.policy import ClassPolicy


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str  # queue_full | queue_tokens | predicted_wait | no_engine
    retry_after_s: float
    message: str


def check_admission(
    policy: ClassPolicy,
    queued: int,
    queued_tokens: int,
    cost: int | None,
    deadline: float,
    predicted_wait_s: float | None,
    now: float,
) -> Rejection | None:
    """None to admit; otherwise why not and when to come back.

    ``cost``: the ticket's tokens (prompt + max); None for a precheck before
    tokenization, which leaves the token budget to the check with the ticket.
    """
    # When to retry: once the queue ahead has drained, as far as we can tell.
    retry = predicted_wait_s if predicted_wait_s is not None else policy.queue_timeout_s
    retry = max(1.0, math.ceil(retry))
    if queued >= policy.max_queue:
        return Rejection("queue_full", retry,
                         f"The {policy.name!r} queue is full ({policy.max_queue} requests).")
    if cost is not None and queued_tokens + cost > policy.max_queued_tokens:
        return Rejection("queue_tokens", retry,
                         f"The {policy.name!r} queue holds its budget of "
                         f"{policy.max_queued_tokens} tokens.")
    budget = deadline - now
    if predicted_wait_s is not None and predicted_wait_s > budget:
        return Rejection("predicted_wait", retry,
                         f"Predicted wait {predicted_wait_s:.1f} s exceeds the "
                         f"{budget:.1f} s this request may wait in {policy.name!r}.")
    return None
