"""One real gateway (``python -m gateway``) for the reliability battery.

A single vLLM engine on the demo model, with a config small enough to provoke
every stage cheaply: four sequences per engine and a fixed concurrency limit
(so five long requests put one in the queue), prefill in chunks of 16 tokens
(so a long prompt spends many engine steps before its first token), a 64 KiB
body limit (413), a short drain timeout. Started once per session; the SIGTERM test starts its
own with ``start_gateway``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import GatewayProcess, start_gateway

MAX_NUM_SEQS = 4
MAX_BODY_BYTES = 65_536
MAX_MODEL_LEN = 2048
PREFILL_CHUNK = 16

CONFIG = f"""
server:
  max_body_bytes: {MAX_BODY_BYTES}
  drain_timeout_s: 4
scheduler:
  reserved_slots: 0
  top_class_headroom: 0
  controller: {{enabled: false}}
engines:
  - name: solo
    model: demo
    classes: [interactive, standard, batch]
    env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
    warmup: {{ladder: [32]}}
    args: {{max_model_len: {MAX_MODEL_LEN}, max_num_seqs: {MAX_NUM_SEQS},
           max_num_batched_tokens: {PREFILL_CHUNK}, enable_chunked_prefill: true,
           enforce_eager: true}}
"""


def write_config(directory: Path, text: str = CONFIG) -> Path:
    path = directory / "reliability.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("reliability")
    gw = start_gateway(tmp, write_config(tmp))
    yield gw
    code = gw.terminate()
    assert code == 0, gw.logs()[-5000:]


@pytest.fixture(scope="session")
def model_name(gateway: GatewayProcess) -> str:
    data = requests.get(f"{gateway.url}/v1/models", timeout=10).json()
    return str(data["data"][0]["id"])
