"""Workload content as data: what each request asks for, independent of when it is sent.

Three sources:

* ``random`` -- input/output lengths fixed (``256``) or uniform in a range (``128:512``);
* ``chat`` -- a synthetic chat-length distribution: log-normal input and output lengths
  (medians from ``--input-len``/``--output-len``; the long right tail of real chat traffic),
  clipped to the given range, or to [1, 4 x median] for a fixed length;
* a JSONL file, one request per line: ``{"prompt": str}`` or ``{"messages": [...]}``, with
  optional ``"output_len"`` (or ``"max_tokens"``) and ``"class"`` (overrides ``--mix``).
  Lines are shuffled by the seed and reused in turn when more requests than lines are sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadtest.config import DatasetSpec, Length
from loadtest.errors import UsageError
from loadtest.prompts import PromptMaker, prompt_maker

CHAT_INPUT_SIGMA = 0.9  # log-space spread of chat prompt lengths
CHAT_OUTPUT_SIGMA = 0.7
_JSONL_OUTPUT_DEFAULT = 128


@dataclass(frozen=True, slots=True)
class Sample:
    """The content of one request."""

    prompt: str | None  # text for /v1/completions
    messages: tuple[dict[str, Any], ...] | None  # for /v1/chat/completions
    output_len: int  # max_tokens; with ignore_eos, the output length
    input_len: int | None  # prompt tokens if known exactly (tokenizer); else None
    sla_class: str | None = None  # a JSONL line's own class


def _uniform(rng: np.random.Generator, length: Length, size: int) -> np.ndarray:
    return rng.integers(length.low, length.high + 1, size=size)


def _log_normal(rng: np.random.Generator, length: Length, sigma: float, size: int) -> np.ndarray:
    median = (length.low + length.high) / 2
    low, high = (1, 4 * median) if length.low == length.high else (length.low, length.high)
    drawn = rng.lognormal(mean=np.log(median), sigma=sigma, size=size)
    return np.clip(np.rint(drawn), low, high).astype(int)


def synthetic_samples(
    spec: DatasetSpec, count: int, rng: np.random.Generator, maker: PromptMaker
) -> list[Sample]:
    """``count`` samples of the ``random`` or ``chat`` dataset."""
    if spec.kind == "chat":
        inputs = _log_normal(rng, spec.input_len, CHAT_INPUT_SIGMA, count)
        outputs = _log_normal(rng, spec.output_len, CHAT_OUTPUT_SIGMA, count)
    else:
        inputs = _uniform(rng, spec.input_len, count)
        outputs = _uniform(rng, spec.output_len, count)
    samples = []
    for n_in, n_out in zip(inputs, outputs, strict=True):
        text, got = maker.make(int(n_in), rng)
        samples.append(Sample(text, None, int(n_out), got if maker.exact else None))
    return samples


def _jsonl_sample(line: dict[str, Any], where: str) -> Sample:
    prompt, messages = line.get("prompt"), line.get("messages")
    if not isinstance(prompt, str) and not isinstance(messages, list):
        raise UsageError(f"{where}: needs a string 'prompt' or a list 'messages'")
    out = line.get("output_len", line.get("max_tokens", _JSONL_OUTPUT_DEFAULT))
    if not isinstance(out, int) or isinstance(out, bool) or out < 1:
        raise UsageError(f"{where}: 'output_len' must be a positive integer")
    cls = line.get("class")
    if cls is not None and not isinstance(cls, str):
        raise UsageError(f"{where}: 'class' must be a string")
    return Sample(
        prompt if isinstance(prompt, str) else None,
        tuple(messages) if isinstance(messages, list) else None,
        out,
        None,
        cls,
    )


def load_jsonl(path: Path) -> list[Sample]:
    """Every line of a JSONL prompt file, validated; a bad line is a ``UsageError``."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise UsageError(f"--dataset {path}: {exc.strerror}") from None
    samples = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UsageError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(line, dict):
            raise UsageError(f"{path}:{number}: expected a JSON object")
        samples.append(_jsonl_sample(line, f"{path}:{number}"))
    if not samples:
        raise UsageError(f"--dataset {path}: no requests in the file")
    return samples


def build_samples(spec: DatasetSpec, count: int, rng: np.random.Generator) -> list[Sample]:
    """``count`` samples from the dataset ``spec`` names, reproducible from ``rng``."""
    if spec.kind == "jsonl":
        assert spec.path is not None
        pool = load_jsonl(spec.path)
        order = rng.permutation(len(pool))
        return [pool[order[i % len(pool)]] for i in range(count)]
    return synthetic_samples(spec, count, rng, prompt_maker(spec.tokenizer))
