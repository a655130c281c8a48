"""``Scheduler``: the pure, synchronous SLA scheduling core.

No awaits, no sockets, no clock of its own: every call takes ``now``. The
async driver (``dispatcher.py``) calls it on arrivals, releases and timers.

Dispatch order when an engine has a free slot:
1. Only classes with queued work and a free eligible engine compete.
2. Strict rank: the lowest rank among them wins...
3. ...shared by weight (stride scheduling) among classes of that rank, and
   with any lower-ranked class whose oldest ticket has waited past the
   promotion age (starvation promotion: that ticket goes next for its class).
4. Inside a class: tenant fairness by tokens, then earliest deadline.
Placement: prefix affinity, then the least loaded eligible engine.

``reconfigure`` takes new class policies and settings (a config reload) without
losing a queued or granted ticket or an engine's current concurrency limit.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.admission import Rejection, check_admission
from scheduler.controller import ConcurrencyController, ControllerState
from scheduler.placement import Affinity, choose_engine
from scheduler.policy import ClassPolicy, SchedulerSettings
from scheduler.queues import ClassQueue
from scheduler.rate import RateMeter
from scheduler.ticket import Ticket, TicketState

_RECENT_TTFT = 512  # samples kept per class for the /v1/sla p99


@dataclass(frozen=True, slots=True)
class ClassSnapshot:
    policy: ClassPolicy
    queued: int
    queued_tokens: int
    counters: Mapping[str, int]  # submitted, rejected:<reason>, granted, expired, ...
    ttft_p99_s: float | None  # recent arrival -> first token


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    name: str
    healthy: bool
    inflight: int
    controller: ControllerState
    prefill_tokens: int = 0  # lower-class prompt tokens granted and still in prefill


@dataclass(frozen=True, slots=True)
class SchedulerSnapshot:
    classes: tuple[ClassSnapshot, ...]
    engines: tuple[EngineSnapshot, ...]


class Scheduler:
    def __init__(self, classes: Sequence[ClassPolicy], engine_max: Mapping[str, int],
                 settings: SchedulerSettings) -> None:
        self.settings = settings
        _check_engines(classes, engine_max)
        self.classes = {c.name: c for c in classes}
        # Classes a reload removed while they still had queued tickets: those are
        # served under the old policy, new ones refused, until the queue is empty.
        self._retired: set[str] = set()
        self.queues = {c.name: ClassQueue(c.name) for c in classes}
        self.controllers = {
            engine: _controller(settings, classes, engine, limit)
            for engine, limit in engine_max.items()
        }
        self.inflight = dict.fromkeys(engine_max, 0)
        # In flight per engine among the tickets its limit sizes (see _governs).
        self._governed = dict.fromkeys(engine_max, 0)
        # Prompt tokens of paced tickets granted there and not at their first token yet.
        self._prefill = dict.fromkeys(engine_max, 0)
        # The most urgent rank each engine serves: only it may use reserved slots.
        self._top_rank = _top_ranks(classes, engine_max)
        self._mixed = _mixed_ranks(classes, engine_max)
        self.healthy = set(engine_max)
        self.affinity = Affinity(settings.affinity_entries)
        self.counters = {c.name: Counter[str]() for c in classes}
        self._drain = {engine: RateMeter(settings.rate_window_s) for engine in engine_max}
        self._pass = dict.fromkeys(self.classes, 0.0)
        self._vtime = 0.0
        self._deadlines: list[tuple[float, int, Ticket]] = []
        self._granted: dict[str, Ticket] = {}
        self._seq = itertools.count()
        self._ttft = {c.name: deque[float](maxlen=_RECENT_TTFT) for c in classes}
        self._queued = 0  # tickets in all queues: the idle checks below are O(1)

    # -- arrivals ------------------------------------------------------------------

    def submit(self, ticket: Ticket, now: float) -> Rejection | None:
        """Admit (enqueue) the ticket or say why not. Never blocks."""
        policy = self.classes.get(ticket.sla_class)
        if policy is None or ticket.sla_class in self._retired:
            return self._refuse_removed(ticket)
        counters = self.counters[ticket.sla_class]
        counters["submitted"] += 1
        queue = self.queues[ticket.sla_class]
        rejection = self._admission(policy, ticket.cost, ticket.deadline, now)
        if rejection is not None:
            counters[f"rejected:{rejection.reason}"] += 1
            ticket.state = TicketState.DONE
            return rejection
        counters["admitted"] += 1
        ticket.seq = next(self._seq)
        if not len(queue):
            # A class that was idle rejoins the stride at the current virtual
            # time: no banked share for the time it had nothing to send.
            self._pass[policy.name] = max(self._pass[policy.name], self._vtime)
        queue.push(ticket)
        self._queued += 1
        heapq.heappush(self._deadlines, (ticket.deadline, ticket.seq, ticket))
        return None

    def precheck(self, sla_class: str, deadline: float, now: float) -> Rejection | None:
        """Shed a request of this class before its prompt is tokenized, or None.

        The admission checks that need no token count (no engine, queue full,
        predicted wait past ``deadline``), counted as ``submit`` counts a
        rejection. None does not admit: ``submit`` decides, with the ticket.
        """
        policy = self.classes.get(sla_class)
        if policy is None or sla_class in self._retired:
            return None  # submit refuses it (no_class) with the ticket
        if self._queued == 0 and not policy.engines.isdisjoint(self.healthy):
            return None  # nothing queued: nothing to wait behind (the common case)
        rejection = self._admission(policy, None, deadline, now)
        if rejection is not None:
            counters = self.counters[sla_class]
            counters["submitted"] += 1
            counters[f"rejected:{rejection.reason}"] += 1
        return rejection

    def _admission(self, policy: ClassPolicy, cost: int | None, deadline: float,
                   now: float) -> Rejection | None:
        """Why a ticket of this class and ``cost`` (None: not known yet) is refused now."""
        if policy.engines.isdisjoint(self.healthy):  # no allocation: runs per arrival
            return Rejection("no_engine", 5.0, f"No healthy engine serves {policy.name!r}.")
        queue = self.queues[policy.name]
        return check_admission(policy, len(queue), queue.queued_tokens, cost, deadline,
                               self.predicted_wait(policy, now), now)

    def _refuse_removed(self, ticket: Ticket) -> Rejection:
        # Its class was resolved just before a reload removed it.
        counters = self.counters.setdefault(ticket.sla_class, Counter())
        counters["submitted"] += 1
        counters["rejected:no_class"] += 1
        ticket.state = TicketState.DONE
        return Rejection("no_class", 1.0,
                         f"SLA class {ticket.sla_class!r} was removed by a config reload.")

    def predicted_wait(self, policy: ClassPolicy, now: float) -> float | None:
        """Seconds a new ticket of this class would wait, or None if unknown."""
        if not self._queued:
            # Nothing ahead and a free slot: the common case, answered at once
            # (and without building the engine set below).
            healthy = self.healthy
            for e in policy.engines:
                if e in healthy and self._usable(e, policy):
                    return 0.0
        engines = policy.engines & self.healthy
        ahead = sum(len(self.queues[c.name]) for c in self.classes.values()
                    if c.rank <= policy.rank and c.engines & engines)
        # The slots this class may take (as dispatch sees them): the top class's
        # headroom past the limit counts, the reserved ones do not for the others.
        free = sum(max(0, self._class_limit(e, policy) - self.inflight[e]) for e in engines)
        if ahead < free:
            return 0.0
        rates = [r for e in engines if (r := self._drain[e].rate(now)) is not None]
        if not rates or sum(rates) <= 0:
            return None
        return (ahead + 1 - free) / sum(rates)

    # -- dispatch -----------------------------------------------------------------

    def limit(self, engine: str) -> int:
        return self.controllers[engine].limit

    def dispatch(self, now: float) -> list[Ticket]:
        """Grant every ticket that can run now; each gets ``engine`` set."""
        grants: list[Ticket] = []
        if not self._queued:
            return grants  # nothing queued (most releases): nothing to grant or note
        while True:
            if grants and not self._queued:
                return grants  # the queues are empty: nothing is held back either
            # Past the limit only the top class may go (headroom); _usable decides.
            free = {e for e in self.healthy if self.inflight[e] < self._ceiling(e)}
            picked = self._select(now, free) if free else None
            if picked is None:
                break
            ticket, policy = picked
            candidates = sorted(e for e in policy.engines & free
                                if self._usable(e, policy) and not self._paced_out(e, policy))
            if len(candidates) == 1:
                engine = candidates[0]  # what choose_engine picks among one
            else:
                engine = choose_engine(candidates, self.affinity.lookup(ticket.prefix_key),
                                       self.inflight, {e: self.limit(e) for e in candidates})
            self._grant(ticket, policy, engine, now)
            grants.append(ticket)
            # A retired class that just drained may have held the top rank (and so
            # the reserved slots): the next pick must already see it gone.
            self._prune_retired()
        self._note_binding()
        return grants

    def _select(self, now: float, free: set[str]) -> tuple[Ticket, ClassPolicy] | None:
        ready = [c for c in self.classes.values()
                 if len(self.queues[c.name])
                 and any(self._usable(e, c) and not self._paced_out(e, c)
                         for e in c.engines & free)]
        if not ready:
            return None
        if len(ready) == 1:
            # One class with work it may start (the common case): it goes next, as
            # the stride below would pick it; a lone class is never "promoted".
            policy = ready[0]
            ticket = self.queues[policy.name].peek()
            assert ticket is not None
            ticket.promoted = False
            return ticket, policy
        top = min(c.rank for c in ready)
        promotion_age = self.settings.promotion_age_s
        contenders: list[tuple[ClassPolicy, bool]] = []
        for c in ready:
            if c.rank == top:
                contenders.append((c, False))
            else:
                oldest = self.queues[c.name].oldest()
                if oldest is not None and now - oldest.arrival >= promotion_age:
                    # Joins the stride at the current virtual time: the grants it
                    # was ranked out of are no credit to take back from the top.
                    self._pass[c.name] = max(self._pass[c.name], self._vtime)
                    contenders.append((c, True))
        policy, promoted = min(contenders, key=lambda cp: (self._pass[cp[0].name], cp[0].rank,
                                                           cp[0].name))
        queue = self.queues[policy.name]
        ticket = queue.oldest() if promoted else queue.peek()
        assert ticket is not None
        ticket.promoted = promoted
        return ticket, policy

    def _usable(self, engine: str, policy: ClassPolicy) -> bool:
        """Whether a ticket of this class may take a slot on the engine now.

        The controller's limit sizes the batch for everything but the engine's
        most urgent class: the last ``reserved_slots`` under it are kept for that
        class, and that class may go ``top_class_headroom`` past it (up to
        ``max_num_seqs``), so a burst of it never waits behind a full batch, nor
        behind a limit the controller just cut below what is already running.
        """
        return self.inflight[engine] < self._class_limit(engine, policy)

    def _paces(self, engine: str, policy: ClassPolicy) -> bool:
        return (self.settings.prefill_budget_tokens > 0 and self._mixed[engine]
                and policy.rank > self._top_rank[engine])

    def _paced_out(self, engine: str, policy: ClassPolicy) -> bool:
        """A lower class waits while the engine's prefill budget is spent.

        Its prefills would fill the engine's next steps' token budget, and a
        chunked prefill already running is scheduled before any waiting one
        (vLLM), however urgent: the top class's prefill would wait steps for room.
        Not a reason to grow the limit, so ``_note_binding`` ignores it.
        """
        return (self._paces(engine, policy)
                and self._prefill[engine] >= self.settings.prefill_budget_tokens)

    def _class_limit(self, engine: str, policy: ClassPolicy) -> int:
        """The in-flight count below which a ticket of this class may start there."""
        if policy.rank > self._top_rank[engine]:
            return max(1, self.limit(engine) - self.settings.reserved_slots)
        return self._ceiling(engine)

    def _governs(self, engine: str, policy: ClassPolicy) -> bool:
        """Whether the controller's limit sizes this class's share of the engine.

        On an engine that serves several ranks the limit sizes everything below the
        top one (the top class runs in reserved slots and headroom, by design); on an
        engine of one rank it sizes every ticket, up to the ceiling.
        """
        return policy.rank > self._top_rank[engine] or not self._mixed[engine]

    def _governed_limit(self, engine: str) -> int:
        if self._mixed[engine]:
            return max(1, self.limit(engine) - self.settings.reserved_slots)
        return self._ceiling(engine)

    def _ceiling(self, engine: str) -> int:
        return min(self.controllers[engine].max_limit,
                   self.limit(engine) + self.settings.top_class_headroom)

    def _grant(self, ticket: Ticket, policy: ClassPolicy, engine: str, now: float) -> None:
        queue = self.queues[policy.name]
        queue.remove(ticket)
        self._queued -= 1
        queue.charge(ticket)
        ticket.state = TicketState.GRANTED
        ticket.engine = engine
        ticket.granted_at = now
        ticket.batch_at_grant = self._governed[engine]
        self.inflight[engine] += 1
        if self._governs(engine, policy):
            ticket.governed = True
            self._governed[engine] += 1
        if self._paces(engine, policy):
            ticket.paced = True
            self._prefill[engine] += ticket.prompt_tokens
        self._granted[ticket.id] = ticket
        self.affinity.remember(ticket.prefix_key, engine)
        self._vtime = self._pass[policy.name]
        self._pass[policy.name] += 1.0 / policy.weight
        counters = self.counters[policy.name]
        counters["granted"] += 1
        if ticket.promoted:
            counters["promoted"] += 1

    def _note_binding(self) -> None:
        # A class it serves has work it may not start here: the engine's limit binds.
        for engine in self.healthy:
            if any(len(self.queues[c.name]) and not self._usable(engine, c)
                   for c in self.classes.values() if engine in c.engines):
                self.controllers[engine].note_binding()

    # -- progress and endings -------------------------------------------------------

    def first_token(self, ticket: Ticket, now: float) -> bool:
        """The engine produced the ticket's first token: feed the controller.

        True if that frees prefill budget (the caller should dispatch)."""
        if ticket.first_token_at is not None or ticket.granted_at is None:
            return False
        ticket.first_token_at = now
        assert ticket.engine is not None
        freed = self._end_prefill(ticket)
        if ticket.batch_at_grant <= self._governed_limit(ticket.engine):
            # Started next to no more of the sized batch than the limit now allows:
            # evidence about this limit (after a cut, the batch drains down to it first).
            self.controllers[ticket.engine].observe(now - ticket.granted_at, now,
                                                    ticket.sla_class)
        if ticket.sla_class in self._ttft:  # else its class is gone since a reload
            self._ttft[ticket.sla_class].append(now - ticket.arrival)
        return freed

    def _end_prefill(self, ticket: Ticket) -> bool:
        if not ticket.paced:
            return False
        ticket.paced = False
        assert ticket.engine is not None
        self._prefill[ticket.engine] -= ticket.prompt_tokens
        return bool(self._queued)

    def release(self, ticket: Ticket, now: float, outcome: str = "finished") -> None:
        """A granted ticket is done (finished, failed or aborted): free its slot."""
        if ticket.state is TicketState.QUEUED:
            self.cancel(ticket)
            return
        if ticket.state is not TicketState.GRANTED:
            return
        assert ticket.engine is not None
        ticket.state = TicketState.DONE
        del self._granted[ticket.id]
        self.inflight[ticket.engine] -= 1
        if ticket.governed:
            self._governed[ticket.engine] -= 1
        self._end_prefill(ticket)
        self._drain[ticket.engine].record(now)
        self.counters[ticket.sla_class][outcome] += 1

    def cancel(self, ticket: Ticket) -> bool:
        """Drop a queued ticket (client gone). False if it was not queued."""
        if ticket.state is not TicketState.QUEUED:
            return False
        self.queues[ticket.sla_class].remove(ticket)
        self._queued -= 1
        ticket.state = TicketState.DONE
        self.counters[ticket.sla_class]["cancelled"] += 1
        self._prune_retired()
        return True

    def expire(self, now: float) -> list[Ticket]:
        """Queued tickets whose deadline has passed, removed from their queues."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, ticket = heapq.heappop(self._deadlines)
            if ticket.state is TicketState.QUEUED:
                self.queues[ticket.sla_class].remove(ticket)
                self._queued -= 1
                ticket.state = TicketState.DONE
                self.counters[ticket.sla_class]["expired"] += 1
                expired.append(ticket)
        self._prune_retired()
        return expired

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][2].state is not TicketState.QUEUED:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def tick(self, now: float) -> bool:
        """Run the controllers; True if any limit changed."""
        changed = False
        for engine, controller in self.controllers.items():
            changed |= controller.update(now, self._used(engine))
        return changed

    def _used(self, engine: str) -> int:
        """The engine's sized batch in the limit's units (_governed_limit's inverse)."""
        if self._mixed[engine]:
            return self._governed[engine] + self.settings.reserved_slots
        return max(0, self._governed[engine] - self.settings.top_class_headroom)

    def set_healthy(self, engines: Iterable[str]) -> None:
        self.healthy = set(engines) & set(self.inflight)

    # -- reconfiguration ------------------------------------------------------------

    def reconfigure(self, classes: Sequence[ClassPolicy], settings: SchedulerSettings) -> None:
        """Take new class policies and settings; keep every ticket and each engine's limit.

        Engines are fixed (changing them needs a restart): a policy naming an unknown
        engine is a ``ValueError`` and nothing changes. Queued tickets keep their place
        (a changed class serves them under its new policy; their deadlines stay as they
        were set at arrival). A class that is gone but still has queued tickets is
        retired: new tickets of it are refused (``no_class``), its queued ones are
        dispatched under its last policy until none is left. Each controller takes the
        new settings and targets, starting from the engine's current limit (clamped to the
        new bounds; a disabled controller takes its fixed initial limit) with an empty
        sample window.
        """
        _check_engines(classes, self.inflight)
        new = {c.name: c for c in classes}
        retired = {name: policy for name, policy in self.classes.items()
                   if name not in new and len(self.queues[name])}
        self.classes = new | retired
        self._retired = set(retired)
        self.settings = settings
        for name in self.classes:
            self.queues.setdefault(name, ClassQueue(name))
            self.counters.setdefault(name, Counter())
            self._ttft.setdefault(name, deque(maxlen=_RECENT_TTFT))
            self._pass.setdefault(name, self._vtime)
        for name in set(self._pass) - set(self.classes):
            del self._pass[name]
        policies = list(self.classes.values())
        for engine, old in self.controllers.items():
            controller = _controller(settings, policies, engine, old.max_limit)
            if settings.controller.enabled:
                # What the old controller learned about this engine stays.
                controller.limit = max(controller.min_limit, min(old.max_limit, old.limit))
            self.controllers[engine] = controller
        self._top_rank = _top_ranks(policies, self.inflight)
        self._mixed = _mixed_ranks(policies, self.inflight)
        for engine, meter in self._drain.items():
            if meter.window_s != settings.rate_window_s:
                self._drain[engine] = RateMeter(settings.rate_window_s)

    def _prune_retired(self) -> None:
        if not self._retired:
            return
        drained = [n for n in self._retired if not len(self.queues[n])]
        for name in drained:
            self._retired.discard(name)
            del self.classes[name]
            del self._pass[name]
        if drained:
            policies = list(self.classes.values())
            self._top_rank = _top_ranks(policies, self.inflight)
            self._mixed = _mixed_ranks(policies, self.inflight)

    # -- state ----------------------------------------------------------------------

    def queued(self) -> int:
        return self._queued

    def snapshot(self) -> SchedulerSnapshot:
        classes = []
        for name, policy in self.classes.items():
            if name in self._retired:
                continue  # draining its last tickets; gone from the config
            samples = self._ttft[name]
            p99 = float(np.quantile(np.fromiter(samples, float), 0.99)) if samples else None
            queue = self.queues[name]
            classes.append(ClassSnapshot(policy, len(queue), queue.queued_tokens,
                                         dict(self.counters[name]), p99))
        engines = tuple(EngineSnapshot(e, e in self.healthy, self.inflight[e],
                                       self.controllers[e].state(), self._prefill[e])
                        for e in self.inflight)
        return SchedulerSnapshot(tuple(classes), engines)


def _check_engines(classes: Iterable[ClassPolicy], engines: Iterable[str]) -> None:
    known = set(engines)
    for c in classes:
        unknown = c.engines - known
        if unknown:
            raise ValueError(f"class {c.name} names unknown engines {sorted(unknown)}")


def _controller(settings: SchedulerSettings, classes: Sequence[ClassPolicy], engine: str,
                max_limit: int) -> ConcurrencyController:
    served = [c for c in classes if engine in c.engines]
    return ConcurrencyController(settings.controller, max_limit,
                                 min((c.ttft_target_s for c in served), default=1.0),
                                 {c.name: c.ttft_target_s for c in served})


def _top_ranks(classes: Iterable[ClassPolicy], engines: Iterable[str]) -> dict[str, int]:
    policies = list(classes)
    return {e: min((c.rank for c in policies if e in c.engines), default=0) for e in engines}


def _mixed_ranks(classes: Iterable[ClassPolicy], engines: Iterable[str]) -> dict[str, bool]:
    policies = list(classes)
    return {e: len({c.rank for c in policies if e in c.engines}) > 1 for e in engines}
