"""One load-test run: discover the target, plan, send open-loop, collect the records.

The send loop only waits for due times, never for responses (open loop): each request is
its own task, owned by one TaskGroup together with the monitor and the progress display.
``--max-concurrency`` caps requests in flight; a request over the cap waits in the client
(its send time, and so its latencies, start when it is actually sent, as in vLLM's tool).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loadtest.arrivals import wait_until
from loadtest.client import Client, open_session
from loadtest.config import RunConfig
from loadtest.metrics import window
from loadtest.monitor import Monitor, ResourceSample
from loadtest.prompts import BYTES_PER_TOKEN
from loadtest.records import RequestRecord, Tally
from loadtest.slos import SLOSet, parse_sla, resolve
from loadtest.workload import Workload, plan

PROGRESS_REFRESH_S = 0.5
LAG_WARNING_S = 0.010  # send lag p99 above this means the client could not keep up


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything a run produced; reports and plots are functions of it."""

    config: RunConfig
    model: str
    slos: SLOSet
    records: tuple[RequestRecord, ...]  # warm-up included, flagged
    measure_start_s: float
    duration_s: float | None  # the measured window
    resources: tuple[ResourceSample, ...]
    started_at: str
    t0_monotonic: float  # perf_counter() at the start, to join with other processes' clocks
    request_id_prefix: str  # X-Request-Id is "<prefix>-<index>"
    notes: tuple[str, ...] = field(default=())

    @property
    def measured(self) -> tuple[RequestRecord, ...]:
        return tuple(r for r in self.records if not r.warmup)


async def _resolve_slos(client: Client, config: RunConfig) -> tuple[SLOSet, list[str]]:
    status, data = await client.get_json("/v1/sla")
    served = parse_sla(data) if status == 200 else None
    default = data.get("default_class") if isinstance(data, dict) else None
    default = default if isinstance(default, str) else None
    slos = resolve(config.slos, served, config.classes, default)
    notes = []
    if slos.source == "none":
        why = "the target has no GET /v1/sla (plain vLLM?)" if status != 200 else (
            "GET /v1/sla lists no targets for these classes")
        notes.append(f"no SLOs: {why} and no --slo given; goodput not computed")
    return slos, notes


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection while sending.

    A full collection over the plan and the growing records stalls the loop for tens of
    milliseconds, and every stall lands in someone's latency. The run makes almost no
    cyclic garbage (a 3,000-request run leaves ~400 unreachable objects), so the collector
    is simply off until the run ends (vLLM's tool freezes the heap for the same reason).
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def _lag_notes(records: list[RequestRecord]) -> list[str]:
    """A warning when the client itself fell behind its schedule (an overloaded machine)."""
    lags = sorted(r.send_s - r.due_s for r in records)
    if not lags:
        return []
    p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
    if p99 < LAG_WARNING_S:
        return []
    return [f"the client fell behind its arrival schedule (send lag p99 {p99 * 1000:.0f} ms, "
            f"max {lags[-1] * 1000:.0f} ms): the machine running loadtest was starved, and "
            "latencies measured during the stalls include them"]


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        auto_refresh=False,
        transient=True,
    )


async def _show(progress: Progress, tally: Tally, workload: Workload, stop: asyncio.Event) -> None:
    task = progress.add_task("warm-up", total=len(workload.requests), counts="")
    warm = workload.warmup_count
    while True:
        phase = "warm-up" if tally.sent <= warm and warm else "measuring"
        counts = (f"ok {tally.ok} · rejected {tally.rejected} · errors {tally.errors}"
                  + (f" · hung up {tally.cancelled}" if tally.cancelled else "")
                  + f" · in flight {tally.in_flight}")
        progress.update(task, completed=tally.done, description=phase, counts=counts)
        progress.refresh()
        if stop.is_set():
            return
        try:
            await asyncio.wait_for(stop.wait(), PROGRESS_REFRESH_S)
        except TimeoutError:
            continue


async def _send_all(
    client: Client,
    workload: Workload,
    bodies: list[bytes],
    tally: Tally,
    config: RunConfig,
    monitor: Monitor | None,
    progress: Progress | None,
) -> list[RequestRecord]:
    cap = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
    stop = asyncio.Event()

    async def one(index: int) -> RequestRecord:
        request = workload.requests[index]
        if cap is not None:
            await cap.acquire()
        try:
            tally.sent += 1
            record = await client.send(request, bodies[index])
        finally:
            if cap is not None:
                cap.release()
        tally.count(record)
        return record

    async with asyncio.TaskGroup() as group:
        if monitor is not None:
            group.create_task(monitor.run(stop))
        if progress is not None:
            group.create_task(_show(progress, tally, workload, stop))
        tasks = []
        for request in workload.requests:
            await wait_until(client.t0 + request.due_s)
            tasks.append(group.create_task(one(request.index)))
        records = await asyncio.gather(*tasks)
        stop.set()
    return list(records)


async def run(
    config: RunConfig, console: Console | None = None, watch_pids: tuple[int, ...] = ()
) -> RunResult:
    """Run ``config`` against its target and return the result (nothing written yet)."""
    console = console or Console(stderr=True)
    workload = plan(config)
    notes = []
    if config.dataset.kind != "jsonl" and config.dataset.tokenizer is None:
        notes.append(f"prompt lengths are estimates ({BYTES_PER_TOKEN} bytes/token); "
                     "pass --tokenizer DIR for exact ones (usage.prompt_tokens is recorded)")
    async with open_session(config) as session:
        client = Client(config, session, t0=0.0)
        model = config.model or await client.model()
        slos, slo_notes = await _resolve_slos(client, config)
        notes += slo_notes
        for sla_class in config.classes if config.sends_service_tier else (None,):
            await client.probe(model, sla_class)
        bodies = [client.encode(r, model) for r in workload.requests]
        tally = Tally()
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        client.t0 = time.perf_counter()
        monitor = None
        if config.monitor_interval_s > 0:
            monitor = Monitor(client.get_text, tally, client.t0, config.monitor_interval_s,
                              watch_pids)
        progress = _progress(console) if config.progress else None
        with _collector_paused(), progress or contextlib.nullcontext():
            records = await _send_all(client, workload, bodies, tally, config, monitor, progress)
    if workload.warmup_count:
        notes.append(f"warm-up: the first {workload.warmup_count} requests "
                     f"({workload.measure_start_s:.1f} s) are excluded from the statistics")
    measured = [r for r in records if not r.warmup]
    if config.max_concurrency is None:
        notes += _lag_notes(measured)
    return RunResult(
        config=config,
        model=model,
        slos=slos,
        records=tuple(records),
        measure_start_s=workload.measure_start_s,
        duration_s=window(measured, workload.measure_start_s),
        resources=tuple(monitor.samples) if monitor else (),
        started_at=started_at,
        t0_monotonic=client.t0,
        request_id_prefix=client.run_id,
        notes=tuple(notes),
    )
