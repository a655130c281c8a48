"""``Ticket``: one request's place in the scheduler, from arrival to release."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TicketState(enum.Enum):
    QUEUED = "queued"
    GRANTED = "granted"  # dispatched to an engine, holding one of its slots
    DONE = "done"  # released, expired, cancelled or rejected


@dataclass(slots=True, eq=False)
class Ticket:
    """A request as the scheduler sees it: who, which class, how much work, by when.

    ``deadline`` is the latest time the ticket may still be granted: arrival
    plus the class's queue timeout, tightened (never loosened) by a client
    deadline. ``prefix_key`` hashes the leading prompt tokens for affinity.
    """

    id: str
    sla_class: str
    tenant: str
    prompt_tokens: int
    max_tokens: int
    arrival: float
    deadline: float
    prefix_key: int | None = None
    seq: int = 0  # arrival order, set by the scheduler; the final tie-breaker
    state: TicketState = TicketState.QUEUED
    engine: str | None = None
    granted_at: float | None = None
    first_token_at: float | None = None
    promoted: bool = False
    governed: bool = False  # counted in its engine's limit-sized batch (Scheduler._governs)
    batch_at_grant: int = 0  # that batch's size when this ticket was granted
    paced: bool = False  # its prompt counts in the engine's prefill budget until its first token

    @property
    def cost(self) -> int:
        """Work estimate in tokens, used for queued-token budgets and fairness."""
        return self.prompt_tokens + self.max_tokens
