"""Fixtures for the instrument's tests: the fake OpenAI server, in-loop or in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from lt_support import FakeTarget

from loadtest.bench.fake_server import SLA_EXAMPLE, Behaviour, make_app


@pytest.fixture
async def fake() -> AsyncIterator[FakeTarget]:
    """The fake server on this test's loop (for tests that call ``runner.run`` directly)."""
    behaviour = Behaviour(sla=SLA_EXAMPLE)
    server = TestServer(make_app(behaviour), host="127.0.0.1")
    await server.start_server()
    yield FakeTarget(str(server.make_url("")).rstrip("/"), behaviour)
    await server.close()


@pytest.fixture
def threaded_fake() -> Iterator[FakeTarget]:
    """The fake server on its own loop in a thread (for tests of the synchronous CLI)."""
    behaviour = Behaviour(sla=SLA_EXAMPLE, metrics=True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(make_app(behaviour), access_log=None)
    asyncio.run_coroutine_threadsafe(runner.setup(), loop).result(10)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    asyncio.run_coroutine_threadsafe(site.start(), loop).result(10)
    port = runner.addresses[0][1]
    yield FakeTarget(f"http://127.0.0.1:{port}", behaviour)
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level BPE tokenizer saved as a Hugging Face tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = Path(asyncio.__file__).read_text().splitlines() * 3
    tokenizer.train_from_iterator(corpus, trainer)
    out = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>"}'
    )
    return out
