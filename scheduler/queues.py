"""``ClassQueue``: the tickets of one SLA class, fair between tenants.

Between tenants: start-time fair queuing on tokens. Each tenant has a virtual
counter of tokens granted; the tenant with the smallest counter goes next, and
a tenant that was idle rejoins at the current minimum, so it cannot bank credit
while away. Within a tenant: earliest deadline first, then arrival order.

Removal (cancel, expiry) is lazy: the ticket's state says it is gone, and heap
tops are skipped until a live one shows. Counts and token sums stay exact.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from scheduler.ticket import Ticket, TicketState


@dataclass(slots=True)
class _Tenant:
    heap: list[tuple[float, int, Ticket]] = field(default_factory=list)
    live: int = 0


class ClassQueue:
    def __init__(self, name: str) -> None:
        self.name = name
        self._tenants: dict[str, _Tenant] = {}
        self._virtual: dict[str, float] = {}  # tokens granted per tenant (fairness)
        # The counter of the last tenant granted: where a tenant rejoins when no
        # other is queued (else an empty queue would hand back everyone's credit).
        self._floor = 0.0
        self._arrivals: deque[Ticket] = deque()  # arrival order, for the oldest ticket
        self._ids: dict[str, Ticket] = {}
        self.queued_tokens = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, ticket_id: str) -> bool:
        return ticket_id in self._ids

    def get(self, ticket_id: str) -> Ticket | None:
        return self._ids.get(ticket_id)

    def push(self, ticket: Ticket) -> None:
        tenant = self._tenants.get(ticket.tenant)
        if tenant is None:
            tenant = self._tenants[ticket.tenant] = _Tenant()
        if tenant.live == 0:
            # Rejoin at the busiest-served minimum: no credit for idle time.
            floor = min((self._virtual[t] for t, s in self._tenants.items() if s.live),
                        default=self._floor)
            self._virtual[ticket.tenant] = max(self._virtual.get(ticket.tenant, 0.0), floor)
        heapq.heappush(tenant.heap, (ticket.deadline, ticket.seq, ticket))
        tenant.live += 1
        self._arrivals.append(ticket)
        self._ids[ticket.id] = ticket
        self.queued_tokens += ticket.cost

    def remove(self, ticket: Ticket) -> None:
        """Take a queued ticket out (cancel, expiry, grant). Caller sets its state."""
        del self._ids[ticket.id]
        tenant = self._tenants[ticket.tenant]
        tenant.live -= 1
        if not tenant.live:
            tenant.heap.clear()  # only removed tickets are left in it
        self.queued_tokens -= ticket.cost
        # Drop removed tickets from the head of the arrival order now: ``oldest``
        # only runs when a lower-ranked class competes, so with one busy class
        # nothing else would ever trim it (it held every ticket ever granted).
        arrivals = self._arrivals
        while arrivals and arrivals[0].id not in self._ids:
            arrivals.popleft()

    def peek(self) -> Ticket | None:
        """The next ticket by tenant fairness, then deadline; None when empty."""
        best: Ticket | None = None
        best_key: tuple[float, float, int] | None = None
        for name, tenant in self._tenants.items():
            if not tenant.live:
                continue
            head = self._head(tenant)
            key = (self._virtual[name], head.deadline, head.seq)
            if best_key is None or key < best_key:
                best, best_key = head, key
        return best

    def oldest(self) -> Ticket | None:
        """The queued ticket that arrived first."""
        while self._arrivals and self._arrivals[0].id not in self._ids:
            self._arrivals.popleft()
        return self._arrivals[0] if self._arrivals else None

    def charge(self, ticket: Ticket) -> None:
        """Count a granted ticket's tokens against its tenant."""
        start = self._virtual.get(ticket.tenant, 0.0)
        self._floor = max(self._floor, start)
        self._virtual[ticket.tenant] = start + ticket.cost

    @staticmethod
    def _head(tenant: _Tenant) -> Ticket:
        heap = tenant.heap
        while heap[0][2].state is not TicketState.QUEUED:
            heapq.heappop(heap)
        return heap[0][2]
