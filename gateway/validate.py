"""Body bytes -> a validated ``ParsedRequest``, or an ``InvalidRequest``.

Strict decoding comes from ``schema.py``; the rules here are the ones that span
fields or need a friendlier message than a JSON path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from engines.protocol import SamplingSpec
from gateway.errors import InvalidRequest, UnsupportedMediaType
from gateway.schema import ChatBody, CompletionBody, Message, RequestLimits

Kind = Literal["completion", "chat"]

_COMPLETION = msgspec.json.Decoder(CompletionBody)
_CHAT = msgspec.json.Decoder(ChatBody)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A request that passed validation; prompt not yet tokenized."""

    kind: Kind
    model: str
    prompt_text: str | None  # completions with a text prompt
    prompt_token_ids: tuple[int, ...] | None  # completions with a token prompt
    messages: tuple[ChatMessage, ...] | None  # chat
    max_tokens: int | None  # None: the route's default, resolved after tokenizing
    # Its max_tokens is the body's (1 where absent) until serving resolves the
    # default: a body that gives it needs no copy of the spec later.
    sampling: SamplingSpec
    stream: bool
    include_usage: bool
    service_tier: str | None


def parse_request(kind: Kind, body: bytes,
                  limits: RequestLimits = RequestLimits()) -> ParsedRequest:  # noqa: B008
    """Decode and validate one request body of the given route kind."""
    if not body.strip():
        raise InvalidRequest("Request body is empty; expected a JSON object.")
    try:
        decoded: CompletionBody | ChatBody = (
            _CHAT.decode(body) if kind == "chat" else _COMPLETION.decode(body))
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid request: {exc}", param=_param_of(str(exc))) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"Request body is not valid JSON in UTF-8 (lone surrogates and NaN are not "
            f"allowed): {exc}"
        ) from None
    parsed = _parse_chat(decoded) if isinstance(decoded, ChatBody) else _parse_completion(decoded)
    _check_limits(parsed, limits)
    return parsed


def _check_limits(parsed: ParsedRequest, limits: RequestLimits) -> None:
    s = parsed.sampling
    if s.n > limits.max_n:
        raise InvalidRequest(f"`n` is {s.n}; this gateway allows at most {limits.max_n}.",
                             param="n")
    if len(s.stop) > limits.max_stop:
        raise InvalidRequest(f"`stop` has {len(s.stop)} strings; this gateway allows at most "
                             f"{limits.max_stop}.", param="stop")
    if s.logprobs is not None and s.logprobs > limits.max_logprobs:
        param = "top_logprobs" if parsed.kind == "chat" else "logprobs"
        raise InvalidRequest(f"`{param}` is {s.logprobs}; this gateway allows at most "
                             f"{limits.max_logprobs}.", param=param)


def check_content_type(value: str | None) -> None:
    """A body the client labelled as anything but JSON is refused (415); an
    unlabelled one is read as JSON, as OpenAI's and vLLM's servers do."""
    if value is None or value == "application/json":
        return
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/")
                                       and media.endswith("+json")):
        return
    shown = media[:64].encode("unicode_escape").decode("ascii")
    raise UnsupportedMediaType(f"Content-Type {shown!r} is not supported; send the request "
                               "body as application/json.", param="Content-Type")


def parse_deadline_ms(values: Sequence[str]) -> int | None:
    """The ``X-Request-Deadline-Ms`` header's milliseconds; None when absent.

    Strict: exactly one header holding a positive integer in ASCII digits
    (Python's ``int`` would also take ``+5``, ``1_000`` and non-ASCII digits).
    """
    if not values:
        return None
    value = values[0].strip()
    if len(values) > 1 or not (value.isascii() and value.isdigit()) or len(value) > 12 \
            or int(value) <= 0:
        raise InvalidRequest("X-Request-Deadline-Ms must be given once, as a positive "
                             "integer of milliseconds (at most 12 digits).",
                             param="X-Request-Deadline-Ms")
    return int(value)


def _param_of(message: str) -> str | None:
    # msgspec ends messages with "- at `$.field[0].x`"
    marker = "- at `$."
    if marker not in message:
        return None
    return message.split(marker, 1)[1].rstrip("`").split("[", 1)[0].split(".", 1)[0]


def _sampling(body: CompletionBody | ChatBody, logprobs: int | None,
              max_tokens: int | None) -> SamplingSpec:
    stop: tuple[str, ...]
    if body.stop is None:
        stop = ()
    elif isinstance(body.stop, str):
        stop = (body.stop,)
    else:
        stop = tuple(body.stop)
    for s in stop:
        _check_text("stop", s)
    return SamplingSpec(
        max_tokens=max_tokens or 1,
        n=body.n,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=stop,
        logprobs=logprobs,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        ignore_eos=body.ignore_eos,
    )


def _check_common(body: CompletionBody | ChatBody) -> None:
    if not body.model:
        raise InvalidRequest("`model` must not be empty.", param="model")
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest(
            "`stream_options` is only allowed when `stream` is true.", param="stream_options"
        )


def _parse_completion(body: CompletionBody) -> ParsedRequest:
    _check_common(body)
    if body.best_of is not None and body.best_of != body.n:
        raise InvalidRequest("`best_of` is not supported unless it equals `n`.", param="best_of")
    if body.echo:
        raise InvalidRequest("`echo` is not supported.", param="echo")
    if body.suffix is not None:
        raise InvalidRequest("`suffix` is not supported.", param="suffix")
    text, token_ids = _completion_prompt(body.prompt)
    return ParsedRequest(
        kind="completion",
        model=body.model,
        prompt_text=text,
        prompt_token_ids=token_ids,
        messages=None,
        max_tokens=body.max_tokens,
        sampling=_sampling(body, body.logprobs, body.max_tokens),
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        service_tier=body.service_tier,
    )


def _completion_prompt(prompt: object) -> tuple[str | None, tuple[int, ...] | None]:
    """(text, None) or (None, token ids) from any of OpenAI's four prompt shapes."""
    if isinstance(prompt, list) and all(isinstance(p, int) for p in prompt):
        return None, tuple(prompt)
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InvalidRequest(
                "Batched prompts are not supported: send one prompt per request "
                "(each gets its own place in the SLA queues).",
                param="prompt",
            )
        prompt = prompt[0]
        if isinstance(prompt, list):
            if not prompt:
                raise InvalidRequest("`prompt` must not be empty.", param="prompt")
            return None, tuple(prompt)
    assert isinstance(prompt, str)
    if not prompt:
        raise InvalidRequest("`prompt` must not be empty.", param="prompt")
    _check_text("prompt", prompt)
    return prompt, None


def _parse_chat(body: ChatBody) -> ParsedRequest:
    _check_common(body)
    if body.max_tokens is not None and body.max_completion_tokens is not None:
        raise InvalidRequest(
            "Give `max_tokens` or `max_completion_tokens`, not both.", param="max_tokens"
        )
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("`top_logprobs` needs `logprobs` true.", param="top_logprobs")
    messages = tuple(_flatten(m, i) for i, m in enumerate(body.messages))
    max_tokens = body.max_completion_tokens or body.max_tokens
    return ParsedRequest(
        kind="chat",
        model=body.model,
        prompt_text=None,
        prompt_token_ids=None,
        messages=messages,
        max_tokens=max_tokens,
        sampling=_sampling(body, (body.top_logprobs or 0) if body.logprobs else None,
                           max_tokens),
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        service_tier=body.service_tier,
    )


def _flatten(message: Message, index: int) -> ChatMessage:
    if isinstance(message.content, str):
        content = message.content
    else:
        content = "".join(part.text for part in message.content)
    _check_text(f"messages[{index}].content", content)
    return ChatMessage(role=message.role, content=content)


def _check_text(param: str, text: str) -> None:
    # msgspec already refuses lone-surrogate escapes; this guards the remaining
    # way a str can be unencodable and keeps the rule explicit at the edge.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"`{param}` is not valid Unicode.", param=param) from None
