"""Hot-path shortcuts give exactly what the plain paths give."""

from __future__ import annotations

import orjson
import pytest
from transformers import AutoTokenizer

from engines.demo_model import ensure_demo_model
from engines.protocol import FinishReason, TokenDelta, TokenLogprob
from gateway.prompts import PromptEncoder
from gateway.validate import ChatMessage
from gateway.wire import Transcript, sse


@pytest.mark.parametrize("kind", ["chat", "completion"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_chunk_bytes_equal_dumping_the_whole_envelope(kind: str, include_usage: bool) -> None:
    # A model name and class that need JSON escaping, to catch a hand-built envelope.
    t = Transcript(kind, 'id-"1"', 'mödel\n"x"', n=2, prompt_tokens=3, top_logprobs=1,
                   sla_class="bätch", include_usage=include_usage)  # type: ignore[arg-type]
    deltas = [TokenDelta(0, "a\u2028", (1,), None, (TokenLogprob("a", -0.5, (("a", -0.5),)),)),
              TokenDelta(1, "b", (2,), None, (TokenLogprob("b", -0.1, (("b", -0.1),)),)),
              TokenDelta(0, "", (), FinishReason.STOP, None)]
    for delta in deltas:
        fast = t.chunk(delta)
        event = orjson.loads(fast[6:-2])
        (body,) = event.pop("choices")
        expected = sse(t._envelope([body], usage=None))
        assert fast == expected
    assert event["id"] == 'id-"1"' and event["model"] == 'mödel\n"x"'
    assert ("usage" in event) is include_usage


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return AutoTokenizer.from_pretrained(str(ensure_demo_model()))


TEXTS = ["Hello there, how are you today?", "", " ", "héllo wörld 🤖\n\n\tnew line",
         "<|im_start|>user\nhi<|im_end|>", "x" * 3000, "  leading and trailing  "]


@pytest.mark.parametrize("text", TEXTS)
def test_fast_encoder_gives_the_tokenizers_ids(tokenizer, text: str) -> None:  # type: ignore[no-untyped-def]
    encoder = PromptEncoder(tokenizer, len(tokenizer))
    assert encoder._encode is not None  # the fast path is the one under test
    assert encoder.encode_text(text) == tokenizer.encode(text, add_special_tokens=True)


def test_fast_chat_encoding_gives_the_tokenizers_ids(tokenizer) -> None:  # type: ignore[no-untyped-def]
    encoder = PromptEncoder(tokenizer, len(tokenizer))
    messages = [ChatMessage("system", "Be brief. <|im_end|>"), ChatMessage("user", "héllo 🤖")]
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages], tokenize=False,
        add_generation_prompt=True)
    assert encoder.encode_chat(messages) == tokenizer.encode(rendered, add_special_tokens=False)


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_streamed_chunks_count_what_add_counts(kind: str) -> None:
    def transcript() -> Transcript:
        return Transcript(kind, "id", "m", n=2, prompt_tokens=3, top_logprobs=1,  # type: ignore[arg-type]
                          sla_class="standard")

    deltas = [TokenDelta(0, "a", (1,), None, (TokenLogprob("a", -0.5, (("a", -0.5),)),)),
              TokenDelta(1, "b", (2, 3), None, None),
              TokenDelta(1, "", (), FinishReason.LENGTH, None),
              TokenDelta(0, "c", (4,), FinishReason.STOP, ())]
    streamed, added = transcript(), transcript()
    for delta in deltas:
        streamed.chunk(delta)
        added.add(delta)
    for s, a in zip(streamed.choices, added.choices, strict=True):
        assert (s.tokens, s.logprobs, s.finish_reason) == (a.tokens, a.logprobs, a.finish_reason)
    assert streamed.completion_tokens == added.completion_tokens == 4
    assert streamed.finished and added.finished


@pytest.mark.parametrize("kind", ["chat", "completion"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_text_only_chunks_are_the_bytes_of_their_whole_body(kind: str,
                                                            include_usage: bool) -> None:
    # Text-only deltas take the pre-rendered path: each must be the bytes of dumping
    # the envelope with the body the general path builds, escaping included.
    t = Transcript(kind, 'id-"1"', 'mödel\n"x"', n=2, prompt_tokens=3,  # type: ignore[arg-type]
                   top_logprobs=None, sla_class="bätch", include_usage=include_usage)
    texts = [" t1", 'q"\\\n\u2028🤖', "", " t3"]
    seen: set[int] = set()
    for i, text in enumerate(texts):
        index = i % 2
        delta = TokenDelta(index, text, (i,))
        if kind == "completion":
            body: dict[str, object] = {"index": index, "text": text}
        else:
            body = {"index": index, "delta": ({"content": text} if index in seen else
                                              {"role": "assistant", "content": text})}
        seen.add(index)
        body |= {"logprobs": None, "finish_reason": None}
        assert t.chunk(delta) == sse(t._envelope([body], usage=None))
    assert t.completion_tokens == len(texts)
