"""SSE framing and the meaning of OpenAI stream events."""

from __future__ import annotations

import orjson

from loadtest.sse import Kind, SSEParser, classify


def test_events_split_across_chunks() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.feed(b": 1}\n") == []
    assert parser.feed(b"\ndata: [DO") == [b'{"a": 1}']
    assert parser.feed(b"NE]\n\n") == [b"[DONE]"]
    assert parser.pending == b""


def test_several_events_in_one_chunk_and_crlf() -> None:
    parser = SSEParser()
    chunk = b"data: 1\r\n\r\ndata: 2\r"
    assert parser.feed(chunk) == [b"1"]
    assert parser.feed(b"\n\r\n") == [b"2"]  # the "\r\n" split between chunks


def test_comments_fields_and_multiline_data() -> None:
    parser = SSEParser()
    stream = b": ping\n\nevent: message\nid: 7\ndata: line1\ndata:line2\n\nretry: 5\n\n"
    assert parser.feed(stream) == [b"line1\nline2"]


def _payload(data: object) -> bytes:
    return orjson.dumps(data)


def test_completion_token_events_follow_vllm() -> None:
    # any event with choices is a token event, even with empty text (a special token)
    event = classify(_payload({"choices": [{"text": ""}]}), chat=False)
    assert event.kind is Kind.TOKEN
    usage = classify(_payload({"choices": [], "usage": {"completion_tokens": 9,
                                                         "prompt_tokens": 3}}), chat=False)
    assert (usage.kind, usage.completion_tokens, usage.prompt_tokens) == (Kind.USAGE, 9, 3)
    assert classify(b"[DONE]", chat=False).kind is Kind.DONE


def test_chat_role_only_event_is_not_a_token() -> None:
    role = _payload({"choices": [{"delta": {"role": "assistant", "content": ""}}]})
    assert classify(role, chat=True).kind is Kind.OTHER
    content = _payload({"choices": [{"delta": {"content": "Hi"}}]})
    assert classify(content, chat=True).kind is Kind.TOKEN
    reasoning = _payload({"choices": [{"delta": {"reasoning_content": "hmm"}}]})
    assert classify(reasoning, chat=True).kind is Kind.TOKEN


def test_errors_in_stream() -> None:
    event = classify(_payload({"error": {"message": "engine died"}}), chat=False)
    assert event.kind is Kind.ERROR and "engine died" in event.error
    assert classify(b"{not json", chat=False).kind is Kind.ERROR
    assert classify(b"[1, 2]", chat=False).kind is Kind.ERROR
