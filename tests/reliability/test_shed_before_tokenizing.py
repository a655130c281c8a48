"""Admission's first step runs before the prompt is tokenized: a request shed for
a full queue costs no tokenization, so under overload a 429 stays cheap.

The real app on a simulated engine (``fault_support``); the proof that nothing was
tokenized is the answer itself: the shed request's prompt is too long for the
model's context, which tokenizing would have answered with a 400.
"""

from __future__ import annotations

import msgspec

from tests.reliability.fault_support import (
    ONE_SLOT,
    assert_settled,
    completion,
    counts,
    fault_config,
    hold_and_queue,
    start_local_gateway,
)


async def test_full_queue_is_shed_before_the_prompt_is_tokenized() -> None:
    config = fault_config({"a": ("interactive", "standard", "batch")}, ONE_SLOT)
    classes = tuple(msgspec.structs.replace(c, max_queue=1) if c.name == "batch" else c
                    for c in config.classes)
    gw = await start_local_gateway(msgspec.structs.replace(config, classes=classes))
    try:
        before = await counts(gw)
        holder, queued = await hold_and_queue(gw, "batch", max_tokens=300)
        huge = "word " * 200_000  # far past the context once tokenized
        async with gw.session.post(f"{gw.url}/v1/completions",
                                   json=completion(tier="batch", prompt=huge)) as r:
            body = await r.json()
            assert r.status == 429, body
            assert r.headers["X-Reject-Reason"] == "queue_full"
            assert int(r.headers["Retry-After"]) >= 1
            assert body["error"]["code"] == "queue_full"
        assert await gw.metric("gateway_rejections_total", reason="queue_full") == 1
        # With room in the queue the same prompt is tokenized and refused as too long.
        assert (await holder).status == 200
        status, _ = await queued
        assert status == 200
        async with gw.session.post(f"{gw.url}/v1/completions",
                                   json=completion(tier="batch", prompt=huge)) as r:
            assert r.status == 400
        await assert_settled(gw, 4, before)
    finally:
        await gw.stop()
