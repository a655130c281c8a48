"""``VLLMEngine``: the ``Engine`` protocol over vLLM's ``AsyncLLMEngine``.

Only the stable surface is used (``from_engine_args``, ``generate(prompt,
params, request_id, priority=...)``, ``abort``, ``shutdown``) so the adapter runs
on vLLM 0.26 (GPU machine) and 0.32 (CPU build) alike. Prompts arrive already
tokenized: the gateway tokenized them once for validation and scheduling, and
vLLM must not do it again. Where vLLM takes an already rendered input
(``vllm.inputs.engine.tokens_input``, 0.32), the prompt goes in that form: a
raw ``TokensPrompt`` is "rendered" again in vLLM's thread pool, one thread hop
and GIL hand-off per request on the serving process (measured: 6% of the gateway's
CPU at 90 req/s). Older versions take the ``TokensPrompt``. Output is requested as deltas
(``RequestOutputKind.DELTA``) so no cumulative text is copied per token.

Engine death needs nothing of our own: vLLM's engine-core monitor thread sees
the child process exit, its output handler fails every request queue with
``EngineDeadError`` (raised here as ours) and ``errored`` turns true, which is
``healthy``. Measured on the CPU build: 24 ms from SIGKILL of the engine core
to the error in four in-flight streams. An instance that died stays dead; the
supervisor (``engines.supervisor``) replaces it with a new ``VLLMEngine``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

from engines.protocol import (
    EngineDeadError,
    EngineError,
    EngineInfo,
    EngineStats,
    FinishReason,
    GenerationRequest,
    SamplingSpec,
    TokenDelta,
    TokenLogprob,
    WarmupReport,
)
from engines.vllm_stats import SchedulerSample, make_stat_logger_factory

logger = logging.getLogger(__name__)

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.ABORT}
# How long stop() lets requests in flight take their end before it forces one.
_SETTLE_S = 2.0


class VLLMEngine:
    """One in-process vLLM engine (its engine core runs in a child process)."""

    def __init__(
        self,
        name: str,
        model_path: str,
        served_model_name: str,
        args: Mapping[str, Any],
    ) -> None:
        self.name = name
        self._model_path = model_path
        self._served_model_name = served_model_name
        self._args = dict(args)
        self._llm: Any = None
        self._info: EngineInfo | None = None
        self._sample = SchedulerSample()
        self._inflight: set[str] = set()
        self._stopping = False
        self._uses_priority = self._args.get("scheduling_policy") == "priority"

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> EngineInfo:
        if self._info is not None:
            return self._info
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        engine_args = AsyncEngineArgs(model=self._model_path, **self._args)
        factory = make_stat_logger_factory(self._sample)
        started = time.perf_counter()
        # from_engine_args blocks until the engine core process is up (tens of
        # seconds): run it off the event loop so several engines start together
        # and the gateway stays responsive (liveness) meanwhile.
        self._llm = await asyncio.to_thread(
            AsyncLLMEngine.from_engine_args, engine_args, stat_loggers=[factory]
        )
        model_config = self._llm.model_config
        eos = getattr(self._llm.get_tokenizer(), "eos_token_id", None)
        self._info = EngineInfo(
            model_path=self._model_path,
            served_model_name=self._served_model_name,
            max_model_len=int(model_config.max_model_len),
            eos_token_id=eos,
        )
        logger.info(
            "engine %s started in %.1f s (max_model_len=%d)",
            self.name,
            time.perf_counter() - started,
            self._info.max_model_len,
        )
        return self._info

    async def stop(self) -> None:
        """Fail what runs (``EngineDeadError``), then shut vLLM down off the loop."""
        if self._llm is None:
            return
        self._stopping = True  # requests ended from here on fail (never "finish")
        if self._inflight and self.healthy:
            await self._llm.abort(list(self._inflight))
        # Let each request take its end (the abort's final output, or a dead
        # engine's EngineDeadError, which vLLM delivers within tens of ms)
        # before the output handler goes: without it they would wait forever.
        deadline = time.monotonic() + _SETTLE_S
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        processor = getattr(self._llm, "output_processor", None)
        if self._inflight and processor is not None:
            from vllm.v1.engine.exceptions import EngineDeadError as VLLMDeadError

            processor.propagate_error(VLLMDeadError())
        llm, self._llm = self._llm, None
        # shutdown() cancels the output handler, which must happen on this loop:
        # do it here first, so the rest (seconds: the engine core exits, its
        # workers join) can run in a thread while the gateway keeps serving.
        handler = getattr(llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            await asyncio.wait([handler], timeout=1.0)
        await asyncio.to_thread(llm.shutdown)

    @property
    def healthy(self) -> bool:
        if self._llm is None:
            return False
        return not bool(getattr(self._llm, "errored", False))

    def stats(self) -> EngineStats:
        s = self._sample
        # The scheduler sample arrives with engine outputs, so after the last
        # request finishes or is aborted it can stay stale; vLLM's front end
        # knows exactly how many requests it still tracks.
        idle = self._llm is None or _unfinished_requests(self._llm) == 0
        return EngineStats(
            name=self.name,
            healthy=self.healthy,
            running=0 if idle else s.running,
            waiting=0 if idle else s.waiting,
            kv_cache_usage=s.kv_cache_usage,
            preemptions=s.preemptions,
            inflight=len(self._inflight),
        )

    # -- generation --------------------------------------------------------

    async def warmup(self, prompts: Sequence[GenerationRequest]) -> WarmupReport:
        started = time.perf_counter()
        output_tokens = 0

        async def run(request: GenerationRequest) -> int:
            count = 0
            async for delta in self.generate(request):
                count += len(delta.token_ids)
            return count

        for count in await asyncio.gather(*(run(p) for p in prompts)):
            output_tokens += count
        return WarmupReport(
            engine=self.name,
            requests=len(prompts),
            seconds=time.perf_counter() - started,
            prompt_tokens=sum(len(p.prompt_token_ids) for p in prompts),
            output_tokens=output_tokens,
        )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMDeadError

        if self._llm is None:
            raise EngineDeadError(f"engine {self.name} is not running")
        params = _sampling_params(request.sampling)
        prompt = _engine_prompt(list(request.prompt_token_ids))
        kwargs: dict[str, Any] = {}
        if self._uses_priority:
            kwargs["priority"] = request.priority
        rid = request.request_id
        self._inflight.add(rid)
        finished = False
        try:
            stream = self._llm.generate(prompt, params, rid, **kwargs)
            async for output in stream:
                if output.finished and self._stopping:
                    # Aborted by stop(), not by the client: a failure, not an answer.
                    raise EngineDeadError(f"engine {self.name} was stopped")
                for choice in output.outputs:
                    delta = _to_delta(choice, request.sampling.logprobs is not None)
                    if delta is not None:
                        yield delta
                finished = output.finished
        except VLLMDeadError as exc:
            raise EngineDeadError(f"engine {self.name} died: {exc}") from exc
        except (asyncio.CancelledError, GeneratorExit, EngineError):
            raise
        except ValueError as exc:
            raise EngineError(f"engine {self.name} refused the request: {exc}") from exc
        except Exception as exc:
            raise EngineError(f"engine {self.name} failed the request: {exc!r}") from exc
        finally:
            self._inflight.discard(rid)
            if not finished and self._llm is not None:
                # vLLM aborts on cancellation of its own generator, but our
                # generator may be closed between its yields: abort explicitly.
                await self._llm.abort(rid)

    async def abort(self, request_id: str) -> None:
        if self._llm is not None:
            await self._llm.abort(request_id)


def _engine_prompt(token_ids: list[int]) -> Any:
    """The prompt in the form this vLLM takes without re-rendering it."""
    return _prompt_factory()(token_ids)


@functools.cache
def _prompt_factory() -> Callable[[list[int]], Any]:
    try:
        from vllm.inputs.engine import tokens_input
    except ImportError:  # vLLM before the renderer pipeline (0.26)
        from vllm import TokensPrompt

        return lambda ids: TokensPrompt(prompt_token_ids=ids)
    return tokens_input


def _unfinished_requests(llm: Any) -> int:
    """Requests vLLM's front end still tracks. ``AsyncLLM`` has the method since
    after 0.26; its ``output_processor`` has it in both."""
    count = getattr(llm, "get_num_unfinished_requests", None)
    if count is None:
        count = llm.output_processor.get_num_unfinished_requests
    return int(count())


def _sampling_params(spec: SamplingSpec) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        n=spec.n,
        temperature=spec.temperature,
        top_p=spec.top_p,
        seed=spec.seed,
        stop=list(spec.stop) or None,
        max_tokens=spec.max_tokens,
        logprobs=spec.logprobs,
        presence_penalty=spec.presence_penalty,
        frequency_penalty=spec.frequency_penalty,
        ignore_eos=spec.ignore_eos,
        output_kind=RequestOutputKind.DELTA,
    )


def _to_delta(choice: Any, want_logprobs: bool) -> TokenDelta | None:
    token_ids = tuple(choice.token_ids)
    finish = _FINISH.get(choice.finish_reason) if choice.finish_reason else None
    if not token_ids and finish is None and not choice.text:
        return None
    logprobs = None
    if want_logprobs:
        logprobs = tuple(_to_logprobs(token_ids, choice.logprobs or ()))
    return TokenDelta(
        index=choice.index,
        text=choice.text,
        token_ids=token_ids,
        finish_reason=finish,
        logprobs=logprobs,
    )


def _to_logprobs(token_ids: tuple[int, ...], positions: Any) -> list[TokenLogprob]:
    out = []
    for token_id, position in zip(token_ids, positions, strict=False):
        chosen = position.get(token_id)
        top = sorted(position.items(), key=lambda kv: kv[1].rank or 0)
        out.append(
            TokenLogprob(
                token=(chosen.decoded_token or "") if chosen else "",
                logprob=float(chosen.logprob) if chosen else float("-inf"),
                top=tuple((lp.decoded_token or "", float(lp.logprob)) for _, lp in top),
            )
        )
    return out
