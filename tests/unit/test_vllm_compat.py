"""The adapter's version shims: vLLM 0.26 (GPU machine) and 0.32 (CPU build) differ."""

from __future__ import annotations

from types import SimpleNamespace

from engines.vllm_engine import _unfinished_requests


def test_unfinished_requests_uses_async_llm_method_when_present() -> None:
    # vLLM 0.32: AsyncLLM.get_num_unfinished_requests()
    llm = SimpleNamespace(get_num_unfinished_requests=lambda: 3,
                          output_processor=SimpleNamespace(get_num_unfinished_requests=lambda: 9))
    assert _unfinished_requests(llm) == 3


def test_unfinished_requests_falls_back_to_output_processor() -> None:
    # vLLM 0.26: only its output processor counts them
    llm = SimpleNamespace(output_processor=SimpleNamespace(get_num_unfinished_requests=lambda: 4))
    assert _unfinished_requests(llm) == 4
