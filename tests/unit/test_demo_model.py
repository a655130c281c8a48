"""The demo model builder: files vLLM can load, deterministic, cached, built atomically.

No vLLM here: the model files are checked through ``tokenizers`` and ``transformers``,
the libraries vLLM itself loads them with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines import demo_model
from engines.demo_model import (
    DEMO_MODEL_NAME,
    DEMO_SPEC,
    DemoModelSpec,
    build_demo_model,
    default_cache_dir,
    ensure_demo_model,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def model_dir(cache_dir: Path) -> Path:
    return ensure_demo_model(cache_dir)


def test_builds_into_a_versioned_directory_and_nothing_else(cache_dir: Path, model_dir: Path):
    assert model_dir.parent == cache_dir
    assert model_dir.name == f"{DEMO_MODEL_NAME}-{DEMO_SPEC.digest()}"
    assert sorted(p.name for p in cache_dir.iterdir()) == [model_dir.name]
    assert {p.name for p in model_dir.iterdir()} >= {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }


def test_config_has_the_specified_shape(model_dir: Path):
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"]) == (2, 128)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["head_dim"] == 32
    assert config["vocab_size"] == 1024
    assert config["max_position_embeddings"] == 2048
    assert config["tie_word_embeddings"] is False
    assert config["torch_dtype"] == demo_model.DEMO_MODEL_DTYPE
    assert vocab[tokenizer_config["eos_token"]] == config["eos_token_id"]
    assert vocab[tokenizer_config["bos_token"]] == config["bos_token_id"]


def test_weights_have_llama_names_and_spread_values(model_dir: Path):
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as weights:
        names = set(weights.keys())
        lm_head = weights.get_tensor("lm_head.weight").float()
    assert "model.embed_tokens.weight" in names
    assert "model.layers.1.self_attn.k_proj.weight" in names
    assert tuple(lm_head.shape) == (1024, 128)
    assert 0.015 < lm_head.std().item() < 0.025


@pytest.mark.parametrize(
    "text",
    ["def hello(world):\n\treturn 42", "naïve café — 日本語テキスト 🙂", "", "  \x00\x7f\r\n"],
)
def test_tokenizer_round_trips_any_utf8(model_dir: Path, text: str):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    encoding = tokenizer.encode(text)
    assert encoding.ids[0] == DEMO_SPEC.token_id("<s>")
    assert 0 not in encoding.ids  # <unk> is never needed with a byte-level vocabulary
    assert tokenizer.decode(encoding.ids, skip_special_tokens=True) == text


def test_chat_template_renders_roles_and_generation_prompt(model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye?"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<s><|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi?<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nBye?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without = tokenizer.apply_chat_template(messages, tokenize=False)
    assert not without.endswith("<|im_start|>assistant\n")
    ids = tokenizer.encode(rendered, add_special_tokens=False)
    assert ids.count(DEMO_SPEC.token_id("<|im_start|>")) == 5  # one token each, not spelled out
    assert tokenizer.eos_token_id == DEMO_SPEC.token_id("</s>")


def test_same_spec_builds_byte_identical_files(model_dir: Path, tmp_path: Path):
    build_demo_model(tmp_path, DEMO_SPEC)
    for name in sorted(p.name for p in model_dir.iterdir()):
        assert (tmp_path / name).read_bytes() == (model_dir / name).read_bytes(), name


def test_second_call_reuses_the_cache(cache_dir: Path, model_dir: Path, monkeypatch):
    weights_mtime = (model_dir / "model.safetensors").stat().st_mtime_ns

    def refuse(out: Path, spec: DemoModelSpec = DEMO_SPEC) -> None:
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(demo_model, "build_demo_model", refuse)
    assert ensure_demo_model(cache_dir) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == weights_mtime


def test_a_changed_spec_gets_its_own_directory():
    assert DemoModelSpec(seed=1).digest() != DEMO_SPEC.digest()
    assert DemoModelSpec().digest() == DEMO_SPEC.digest()


def test_failed_build_leaves_nothing_behind(tmp_path: Path):
    too_little_text = DemoModelSpec(corpus_chars=1)  # one small module: too few merges
    with pytest.raises(RuntimeError, match="tokenizer training gave"):
        ensure_demo_model(tmp_path, too_little_text)
    assert list(tmp_path.iterdir()) == []


def test_abandoned_staging_dirs_are_removed(tmp_path: Path):
    name = f"{DEMO_MODEL_NAME}-{DEMO_SPEC.digest()}"
    an_hour_ago = time.time() - 3600
    abandoned = tmp_path / f".{name}.999999999.x1y2"  # above Linux's pid_max: never alive
    abandoned.mkdir()
    (abandoned / "config.json").write_text("{}")
    os.utime(abandoned, (an_hour_ago, an_hour_ago))
    recent = tmp_path / f".{name}.999999999.new"  # maybe a builder in another pid namespace
    recent.mkdir()
    ours = tmp_path / f".{name}.{os.getpid()}.live"  # a (slow) build still running
    ours.mkdir()
    os.utime(ours, (an_hour_ago, an_hour_ago))
    demo_model._remove_abandoned_builds(tmp_path, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([recent.name, ours.name])


def test_concurrent_cli_builds_agree_and_print_only_the_path(tmp_path: Path):
    env = {**os.environ, "SLAGATE_CACHE_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "engines.demo_model"]
    builders = [
        subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    printed = [builder.communicate(timeout=120)[0] for builder in builders]
    assert [builder.returncode for builder in builders] == [0, 0]
    expected = tmp_path / f"{DEMO_MODEL_NAME}-{DEMO_SPEC.digest()}"
    assert printed == [f"{expected}\n"] * 2
    assert [p.name for p in tmp_path.iterdir()] == [expected.name]


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("SLAGATE_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("SLAGATE_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "slagate"
