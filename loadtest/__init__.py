"""loadtest: the capacity-testing instrument (open-loop client, per-class SLO metrics).

Points at any OpenAI-compatible server -- the gateway or plain vLLM -- and measures it
exactly as vLLM's ``benchmarks/serve.py`` defines TTFT, TPOT, ITL, E2EL and goodput.

Modules, in the order a run uses them:

    cli        the command line -> one frozen ``RunConfig`` (config)
    workload   the whole run planned from the seed: arrivals, datasets (prompts), classes
    client     one aiohttp session; discovery, one streamed request -> ``RequestRecord``
    sse        SSE framing and what each stream event means
    runner     the open-loop send loop, progress bar, monitor
    metrics    pure statistics over records; slos: where SLO targets come from
    report     summary.json, requests.csv, timeline.csv, the per-class table; plots: PNGs
    compare    one workload against several targets; sweep: the capacity curve and knee
    tune       engine-arg grid on fresh gateways (launcher: the subprocess lifecycle)
    bench/     the instrument's own benchmarks and its fake server
"""
