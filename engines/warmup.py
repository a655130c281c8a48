"""Warmup requests run on every engine before it is marked ready.

Two kinds: the configured prompts (shared system prompts, so their prefix sits
in the engine's prefix cache before the first client shares it), and the
length ladder (the guide's 32…512): for each length L, a prompt of about L
tokens generating L tokens, all at once, so prefill of several sizes and a
batched decode have run once before any client waits on them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from engines.protocol import GenerationRequest, SamplingSpec

_FILLER = "The quick brown fox jumps over the lazy dog while the scheduler counts tokens. "


def warmup_requests(
    engine_name: str,
    prompts: Sequence[Sequence[int]],
    ladder: Sequence[int],
    encode: Callable[[str], list[int]],
    max_model_len: int,
) -> list[GenerationRequest]:
    """The warmup set for one engine (deterministic: greedy, fixed text).

    ``prompts`` are already tokenized, in the forms clients will send them
    (raw text and inside the chat template), so their prefixes are cached.
    """
    counter = itertools.count()
    requests = []
    for ids in prompts:
        requests.append(_request(engine_name, next(counter), list(ids)[: max_model_len - 16], 16))
    filler = encode(_FILLER * 64)
    for length in ladder:
        prompt_len = min(length, max_model_len // 2)
        out_len = min(length, max_model_len - prompt_len)
        ids = (filler * (1 + prompt_len // max(1, len(filler))))[:prompt_len]
        requests.append(_request(engine_name, next(counter), ids, out_len))
    return requests


def _request(engine: str, i: int, ids: list[int], max_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        request_id=f"warmup-{engine}-{i}",
        prompt_token_ids=tuple(ids),
        sampling=SamplingSpec(max_tokens=max_tokens, temperature=0.0, ignore_eos=True),
    )
