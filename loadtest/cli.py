"""``python -m loadtest``: the command line, parsed once into a ``RunConfig``.

    python -m loadtest [run] --rps 50 [--url URL] [--duration S | --num-requests N]
        [--mix interactive=0.2,batch=0.8] [--dataset random|chat|FILE.jsonl]
        [--input-len 256|LO:HI] [--output-len 64|LO:HI] [--tokenizer DIR]
        [--burstiness 1.0] [--max-concurrency N] [--endpoint completions|chat]
        [--slo [CLASS:]ttft=MS,tpot=MS,e2el=MS ...] [--retry N] [--warmup-requests N |
        --warmup-s S] [--api-key K] [--out DIR] [--seed N] [--sweep-rps 5,10,20,50]
    python -m loadtest compare --url A --url B [--label a --label b] [run flags]
    python -m loadtest tune --grid FILE [--max-ttft-ms X] [--min-throughput T] [run flags]

Errors that stop a run print one line (``loadtest: error: ...``) and exit non-zero; the
exit codes are those of ``loadtest.errors``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from loadtest import compare, report, runner, sweep, tune
from loadtest.config import (
    DatasetKind,
    DatasetSpec,
    Length,
    RunConfig,
    parse_mix,
    parse_priorities,
    parse_slo,
)
from loadtest.errors import LoadtestError, UsageError

T = TypeVar("T")
COMMANDS = ("run", "compare", "tune")


def _rate(text: str) -> float:
    value = float(text)
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be > 0 (or inf)")
    return value


def _rates(text: str) -> list[float]:
    return [_rate(part) for part in text.split(",") if part.strip()]


def _workload_args(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--rps", type=_rate, default=10.0, help="offered load, requests/s (inf: all at once)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, help="seconds of measured arrivals (default 30)")
    length.add_argument("--num-requests", type=int, help="measured requests to send")
    add("--burstiness", type=float, default=1.0, help="gamma shape: 1 Poisson, <1 burstier")
    add("--max-concurrency", type=int, help="cap on requests in flight (default: none)")
    add("--mix", help="classes and shares, sent as service_tier: interactive=0.2,batch=0.8")
    add("--priority", type=parse_priorities, default=(),
        help="vLLM request priority per class (for plain vLLM with --scheduling-policy "
             "priority): interactive=0,batch=2")
    add("--dataset", default="random", help="random, chat, or a JSONL file of prompts")
    add("--input-len", type=Length.parse, default=Length(256, 256), help="N or LO:HI tokens")
    add("--output-len", type=Length.parse, default=Length(64, 64), help="N or LO:HI tokens")
    add("--tokenizer", type=Path, help="local tokenizer dir for exact prompt lengths")
    add("--endpoint", choices=("completions", "chat"), default="completions")
    add("--model", help="model name to send (default: the first of GET /v1/models)")
    add("--api-key", help="bearer key")
    add("--seed", type=int, default=0)
    warm = parser.add_mutually_exclusive_group()
    warm.add_argument("--warmup-requests", type=int, help="first N arrivals are warm-up")
    warm.add_argument("--warmup-s", type=float, default=2.0,
                      help="arrivals of the first S seconds are warm-up (default 2; 0: none)")
    add("--slo", action="append", default=[], type=parse_slo,
        help="[CLASS:]ttft=MS,tpot=MS,e2el=MS; overrides GET /v1/sla (repeatable)")
    add("--retry", type=int, default=0, help="retry a 429/503 up to N times after Retry-After")
    add("--retry-max-wait-s", type=float, default=30.0)
    add("--timeout-s", type=float, default=600.0, help="per-request timeout")
    add("--no-ignore-eos", action="store_true", help="let the model stop at EOS")
    add("--disconnect-fraction", type=float, default=0.0,
        help="share of requests that hang up mid-stream after a random number of tokens")
    add("--out", type=Path, help="results directory (default results/<time>)")
    add("--no-progress", action="store_true")
    add("--no-plots", action="store_true")
    add("--monitor-interval", type=float, default=1.0, help="resource sample period, 0: off")


def build_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest" + ("" if command == "run" else f" {command}"),
        description={"run": "Open-loop load test of an OpenAI-compatible server.",
                     "compare": "The same seeded workload against several servers.",
                     "tune": "Try engine-arg combinations on fresh gateways."}[command],
    )
    if command == "run":
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--label", default="")
        parser.add_argument("--sweep-rps", type=_rates, help="run each rate: 5,10,20,50")
        parser.add_argument("--knee-attainment", type=float, default=0.99,
                            help="sweep: SLO attainment a rate needs to pass")
    elif command == "compare":
        parser.add_argument("--url", action="append", required=True, help="repeat per target")
        parser.add_argument("--label", action="append", default=[])
    else:
        parser.add_argument("--grid", type=Path, required=True, help="YAML grid file")
        parser.add_argument("--max-ttft-ms", type=float, help="constraint on TTFT p99")
        parser.add_argument("--min-throughput", type=float, help="constraint, output tok/s")
        parser.add_argument("--gateway-cmd", default=f"{sys.executable} -m gateway")
        parser.add_argument("--ready-timeout-s", type=float, default=600.0)
    _workload_args(parser)
    return parser


def config_from(args: argparse.Namespace, url: str) -> RunConfig:
    """The one ``RunConfig`` the flags describe."""
    kind: DatasetKind = "jsonl"
    if args.dataset in ("random", "chat"):
        kind = "chat" if args.dataset == "chat" else "random"
    dataset = DatasetSpec(
        kind=kind,
        path=Path(args.dataset) if kind == "jsonl" else None,
        input_len=args.input_len,
        output_len=args.output_len,
        tokenizer=args.tokenizer,
    )
    duration = args.duration if args.num_requests is None else None
    if duration is None and args.num_requests is None:
        duration = 30.0
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return RunConfig(
        url=url, rps=args.rps, duration_s=duration, num_requests=args.num_requests,
        burstiness=args.burstiness, max_concurrency=args.max_concurrency,
        mix=parse_mix(args.mix) if args.mix else RunConfig().mix, dataset=dataset,
        endpoint=args.endpoint, model=args.model, api_key=args.api_key, seed=args.seed,
        warmup_requests=args.warmup_requests, warmup_s=args.warmup_s, slos=tuple(args.slo),
        retry=args.retry, retry_max_wait_s=args.retry_max_wait_s,
        request_timeout_s=args.timeout_s, ignore_eos=not args.no_ignore_eos,
        out=args.out or Path("results") / stamp, label=getattr(args, "label", "") or "",
        progress=not args.no_progress, plots=not args.no_plots,
        monitor_interval_s=args.monitor_interval, priorities=args.priority,
        disconnect_fraction=args.disconnect_fraction,
    )  # fmt: skip


def _run_loop(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run on uvloop when it is installed (cheaper per request), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro_fn())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        return loop_runner.run(coro_fn())


def _run(args: argparse.Namespace, console: Console) -> int:
    config = config_from(args, args.url)
    if args.sweep_rps:
        points, knee, _ = _run_loop(
            lambda: sweep.sweep(config, args.sweep_rps, args.knee_attainment, console))
        sweep.write_sweep(points, knee, config.out, config.plots, console)
    else:
        result = _run_loop(lambda: runner.run(config, console))
        summary = report.write_results(result, config.out)
        if config.plots:
            from loadtest import plots  # matplotlib: only when drawing

            plots.plot_run(result, config.out)
        report.print_report(summary, console)
    console.print(f"results in {config.out}/")
    return 0


def _compare(args: argparse.Namespace, console: Console) -> int:
    if len(args.url) < 2:
        raise UsageError("compare needs at least two --url")
    labels = compare.labels_for(args.url, args.label)
    config = config_from(args, args.url[0])
    runs = _run_loop(lambda: compare.compare(config, args.url, labels, console))
    compare.write_compare(runs, config.out, config.plots, console)
    console.print(f"results in {config.out}/")
    return 0


def _tune(args: argparse.Namespace, console: Console) -> int:
    config = config_from(args, "http://127.0.0.1")
    return _run_loop(lambda: tune.tune(args.grid, config, args.gateway_cmd, args.ready_timeout_s,
                                       args.max_ttft_ms, args.min_throughput, console))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "run"
    # not a terminal (a log, a pipe): wide enough that the table never truncates
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        args = build_parser(command).parse_args(argv)
        handler = {"run": _run, "compare": _compare, "tune": _tune}[command]
        return handler(args, console)
    except LoadtestError as exc:
        print(f"loadtest: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("loadtest: interrupted; results of this run were not written", file=sys.stderr)
        return 130
