"""Prompt text of a requested token length.

With the target's tokenizer (``--tokenizer DIR``, a local directory, never a hub name) the
prompt is built from real vocabulary tokens and re-encoded until it has exactly the
requested count, as vLLM's random dataset does. Without one, the length is an estimate
from bytes (``BYTES_PER_TOKEN``); the server's ``usage.prompt_tokens`` then records the truth
in every result row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from loadtest.errors import UsageError

BYTES_PER_TOKEN = 4  # the usual English-text rule of thumb for BPE vocabularies
_LETTERS = np.frombuffer(b"etaoinshrdlucmfwypvbgkjqxz", dtype=np.uint8)
_LETTER_WEIGHTS = np.linspace(2.0, 0.2, len(_LETTERS))
_LETTER_WEIGHTS /= _LETTER_WEIGHTS.sum()


class PromptMaker(Protocol):
    """Makes prompt text of about ``tokens`` tokens."""

    @property
    def exact(self) -> bool:
        """True when the returned count is the tokenizer's, not an estimate."""
        ...

    def make(self, tokens: int, rng: np.random.Generator) -> tuple[str, int]:
        """Return (text, its token count or the estimate)."""
        ...


class BytePrompts:
    """Random lowercase words, ``BYTES_PER_TOKEN`` bytes per requested token."""

    exact = False

    def make(self, tokens: int, rng: np.random.Generator) -> tuple[str, int]:
        size = tokens * BYTES_PER_TOKEN
        chars = rng.choice(_LETTERS, size=size, p=_LETTER_WEIGHTS)
        # a space every 3-8 letters so BPE tokenizers see word-like text
        spaces = np.cumsum(rng.integers(4, 9, size=size // 4 + 1))
        chars[spaces[spaces < size]] = ord(" ")
        chars[0] = ord("a")
        return chars.tobytes().decode("ascii"), tokens


class TokenizerPrompts:
    """Real tokens of a local Hugging Face tokenizer directory."""

    exact = True

    def __init__(self, path: Path) -> None:
        if not path.is_dir():
            raise UsageError(f"--tokenizer {path}: not a directory (only local tokenizers)")
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise UsageError(f"--tokenizer needs the transformers package ({exc})") from None
        try:
            self._tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--tokenizer {path}: cannot load ({exc})") from None
        self._special_added = int(self._tok.num_special_tokens_to_add())
        special = set(self._tok.all_special_ids)
        # Byte-level vocabularies hold tokens that are fragments of a UTF-8 character; alone
        # they decode to U+FFFD and re-encode differently, so leave them out.
        self._allowed = np.array([
            i for i in range(len(self._tok))
            if i not in special and "\ufffd" not in self._tok.decode([i])
        ])

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False))

    def make(self, tokens: int, rng: np.random.Generator) -> tuple[str, int]:
        # the server adds the tokenizer's special tokens (BOS): they count toward the length
        special = self._special_added
        text, got = self._text_of(max(1, tokens - special), rng)
        return text, got + special

    def _text_of(self, tokens: int, rng: np.random.Generator) -> tuple[str, int]:
        ids = self._random_ids(tokens, rng)
        text, got = "", 0
        # Decoding then re-encoding random ids can merge or split tokens; truncate or pad and
        # try again (vLLM's gen_prompt_decode_to_target_len does the same, 10 rounds).
        for _ in range(10):
            text = str(self._tok.decode(ids))
            ids = self._tok.encode(text, add_special_tokens=False)
            got = len(ids)
            if got == tokens:
                break
            ids = ids[:tokens] if got > tokens else ids + self._random_ids(tokens - got, rng)
        return text, got

    def _random_ids(self, n: int, rng: np.random.Generator) -> list[int]:
        return [int(i) for i in self._allowed[rng.integers(0, len(self._allowed), size=n)]]


def prompt_maker(tokenizer: Path | None) -> PromptMaker:
    return TokenizerPrompts(tokenizer) if tokenizer is not None else BytePrompts()
