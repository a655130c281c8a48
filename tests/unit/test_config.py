"""The config file: defaults, strictness, and errors that name the file, line and key."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from gateway.config import (
    ConfigError,
    EngineSpec,
    GatewayConfig,
    default_config,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway.example.yaml"

ONE_ENGINE = """\
engines:
  - name: only
    model: demo
    classes: [interactive, standard, batch]
"""


def engine_with(extra: str) -> str:
    """``ONE_ENGINE`` with ``extra`` (already indented) appended to its engine, from line 5."""
    return ONE_ENGINE + extra


def test_example_file_is_the_embedded_default():
    assert load_config(EXAMPLE) == default_config()


def test_commented_cuda_example_is_valid(tmp_path: Path):
    text = EXAMPLE.read_text()
    block = text[text.index("# engines:") :]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    model = tmp_path / "deepseek-llm-7b-chat"
    model.mkdir()
    config = parse_config(uncommented.replace("/models/deepseek-llm-7b-chat", str(model)))
    assert [e.args["gpu_memory_utilization"] for e in config.engines] == [0.45, 0.45]
    assert {e.model for e in config.engines} == {str(model)}


def test_default_config_has_two_demo_engines_with_the_guides_profiles():
    config = default_config()
    fast, bulk = config.engines
    assert (fast.name, fast.classes) == ("fast", ("interactive", "standard"))
    assert (bulk.name, bulk.classes) == ("bulk", ("standard", "batch"))
    assert (fast.args["max_num_seqs"], fast.args["max_num_batched_tokens"]) == (16, 2048)
    assert (bulk.args["max_num_seqs"], bulk.args["max_num_batched_tokens"]) == (64, 8192)
    assert all(e.is_demo and e.served_model_name == "slagate-demo" for e in config.engines)
    assert all(e.env == {"VLLM_CPU_KVCACHE_SPACE": "1"} for e in config.engines)


def test_default_engine_args_are_async_engine_args_fields():
    # default_config() skips this check to stay free of a vLLM import; verify it here.
    text = msgspec.yaml.encode(default_config(), enc_hook=dict).decode()  # dict: mappingproxy
    assert parse_config(text) == default_config()


def test_a_minimal_file_gets_every_default():
    config = parse_config(ONE_ENGINE)
    assert config.server.port == 8000
    assert config.server.max_body_bytes == 1 << 20
    assert config.default_class == "standard"
    assert [c.name for c in config.classes] == ["interactive", "standard", "batch"]
    assert config.class_named("interactive").ttft_target_s == 1.0
    assert config.class_named("batch").queue_timeout_ms == 120_000
    (engine,) = config.engines
    assert engine.served_model_name == "slagate-demo"
    assert engine.warmup.ladder == (32, 64, 128, 256, 512)
    assert engine.warmup.prompts == ()
    assert dict(engine.env) == {} and dict(engine.args) == {}


def test_lookups():
    config = default_config()
    assert config.class_named("standard").rank == 1
    with pytest.raises(KeyError):
        config.class_named("gold")
    assert [e.name for e in config.engines_serving("standard")] == ["fast", "bulk"]
    assert [e.name for e in config.engines_serving("batch")] == ["bulk"]


def test_lists_become_tuples_and_everything_is_frozen():
    config = parse_config(engine_with("    args: {max_num_seqs: 4}\n    env: {A: b}\n"))
    engine = config.engines[0]
    assert isinstance(config.classes, tuple) and isinstance(engine.classes, tuple)
    with pytest.raises(AttributeError):
        config.default_class = "batch"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        engine.args = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        engine.args["max_num_seqs"] = 8  # type: ignore[index]
    with pytest.raises(TypeError):
        engine.env["A"] = "c"  # type: ignore[index]


def test_custom_classes_and_floats_accept_integers():
    config = parse_config(
        "default_class: gold\n"
        "classes:\n"
        "  - {name: gold, rank: 0, weight: 3, ttft_target_ms: 250.5}\n"
        "  - {name: bronze, rank: 1}\n"
        "engines:\n"
        "  - {name: a, model: demo, classes: [gold, bronze]}\n"
    )
    gold = config.class_named("gold")
    assert (gold.weight, gold.ttft_target_ms, gold.tpot_target_ms) == (3.0, 250.5, 100.0)


def test_relative_model_paths_are_relative_to_the_file(tmp_path: Path):
    (tmp_path / "models" / "tiny-llama").mkdir(parents=True)
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(
        "engines:\n"
        "  - name: a\n"
        "    model: models/tiny-llama\n"
        "    classes: [interactive, standard, batch]\n"
    )
    (engine,) = load_config(config_file).engines
    assert engine.model == str(tmp_path / "models" / "tiny-llama")
    assert engine.served_model_name == "tiny-llama"
    assert not engine.is_demo


def test_errors_from_a_file_name_the_file(tmp_path: Path):
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text("server:\n  port: '8000'\n")
    with pytest.raises(ConfigError, match=re.escape(f"{config_file}:2: server.port: expected")):
        load_config(config_file)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            engine_with(
                "    args:\n      max_num_seqs: 4\n    warmup:\n      ladder: [32, '64']\n"
            ),
            "gw.yaml:8: engines[0].warmup.ladder[1]: expected int, got str",
            id="wrong-type",
        ),
        pytest.param(
            "server:\n  port: true\n" + ONE_ENGINE,
            "gw.yaml:2: server.port: expected int, got bool",
            id="bool-for-int",
        ),
        pytest.param(
            "server:\n  port: 70000\n",
            "gw.yaml:2: server.port: expected int <= 65535",
            id="out-of-range",
        ),
        pytest.param(
            "server:\n  host: 0.0.0.0\n  prot: 8000\n",
            "gw.yaml:3: server.prot: unknown key (did you mean 'port'?)",
            id="unknown-key",
        ),
        pytest.param(
            engine_with("    warmup:\n      ladders: []\n"),
            "gw.yaml:6: engines[0].warmup.ladders: unknown key (did you mean 'ladder'?)",
            id="nested-unknown-key",
        ),
        pytest.param(
            "server:\n  port: 1\n\n  port: 2\n",
            "gw.yaml:4: server.port: duplicate key (first at line 2)",
            id="duplicate-key",
        ),
        pytest.param(
            engine_with("  - name: only\n    model: demo\n    classes: [batch]\n"),
            "gw.yaml:5: engines[1].name: duplicate engine name 'only' (first at line 2)",
            id="duplicate-engine",
        ),
        pytest.param(
            "classes:\n  - {name: a, rank: 0}\n  - {name: a, rank: 1}\n" + ONE_ENGINE,
            "gw.yaml:3: classes[1].name: duplicate class name 'a' (first at line 2)",
            id="duplicate-class",
        ),
        pytest.param(
            "engines:\n  - name: a\n    model: demo\n    classes:\n      - interactive\n"
            "      - standrd\n",
            "gw.yaml:6: engines[0].classes[1]: unknown class 'standrd' (did you mean 'standard'?)",
            id="unknown-class",
        ),
        pytest.param(
            "engines:\n  - name: a\n    model: demo\n    classes: [interactive, standard]\n",
            "gw.yaml:1: classes[2].name: class 'batch' is served by no engine"
            " (a default class: list `classes`)",
            id="unserved-default-class",
        ),
        pytest.param(
            "default_class: a\nclasses:\n  - {name: a, rank: 0}\n  - {name: b, rank: 1}\n"
            "engines:\n  - {name: e, model: demo, classes: [a]}\n",
            "gw.yaml:4: classes[1].name: class 'b' is served by no engine",
            id="unserved-class",
        ),
        pytest.param(
            "classes:\n  - {name: a, rank: 0}\n" + ONE_ENGINE,
            "gw.yaml:1: default_class: 'standard' (the default) names no class",
            id="default-default-class-missing",
        ),
        pytest.param(
            "default_class: standrd\n" + ONE_ENGINE,
            "gw.yaml:1: default_class: 'standrd' names no class (did you mean 'standard'?)",
            id="unknown-default-class",
        ),
        pytest.param(
            "engines:\n  - name: a\n    classes: [interactive]\n",
            "gw.yaml:2: engines[0].model: required key is missing",
            id="missing-required",
        ),
        pytest.param(
            "server: {}\n", "gw.yaml:1: engines: required key is missing", id="no-engines"
        ),
        pytest.param("", "gw.yaml:1: engines: required key is missing", id="empty-file"),
        pytest.param(
            "engines: []\n", "gw.yaml:1: engines: expected list of length >= 1", id="zero-engines"
        ),
        pytest.param(
            "engines:\n  - name: a\n    model: /no/such/model\n    classes: [interactive]\n",
            "gw.yaml:3: engines[0].model: no such file or directory: '/no/such/model'",
            id="bad-model-path",
        ),
        pytest.param(
            engine_with("    args:\n      max_num_seq: 8\n"),
            "gw.yaml:6: engines[0].args.max_num_seq: unknown engine argument"
            " (did you mean 'max_num_seqs'?)",
            id="unknown-engine-arg",
        ),
        pytest.param(
            engine_with("    args:\n      model: /models/x\n"),
            "gw.yaml:6: engines[0].args.model: set 'model' on the engine itself, not in its args",
            id="model-in-args",
        ),
        pytest.param(
            engine_with("    env: {VLLM_CPU_KVCACHE_SPACE: '1'}\n")
            + "  - name: two\n    model: demo\n    classes: [batch]\n"
            + "    env:\n      VLLM_CPU_KVCACHE_SPACE: '2'\n",
            "gw.yaml:10: engines[1].env.VLLM_CPU_KVCACHE_SPACE: '2' differs from engines[0]"
            " ('1', line 5): engines share one environment",
            id="env-disagrees",
        ),
        pytest.param(
            engine_with("    env:\n      VLLM_CPU_KVCACHE_SPACE: 1\n"),
            "gw.yaml:6: engines[0].env.VLLM_CPU_KVCACHE_SPACE: expected str, got int",
            id="env-not-string",
        ),
        pytest.param(
            "engines:\n  - name: Fast\n",
            "gw.yaml:2: engines[0].name: expected str matching regex '^[a-z0-9_-]+$'",
            id="bad-name",
        ),
        pytest.param(
            "classes:\n  - name: a\n    rank: -1\n",
            "gw.yaml:3: classes[0].rank: expected int >= 0",
            id="negative-rank",
        ),
        pytest.param(
            "classes:\n  - {name: a, rank: 0, weight: .inf}\n",
            "gw.yaml:2: classes[0].weight: expected float <= 1000000.0",
            id="infinite-weight",
        ),
        pytest.param("server: [1]\n", "gw.yaml:1: server: expected mapping, got list", id="list"),
        pytest.param("- 1\n", "gw.yaml:1: expected mapping, got list", id="top-level-list"),
        pytest.param(
            "server:\n  port: [1, 2\nengines: x\n",
            "gw.yaml:3: invalid YAML: expected ',' or ']', but got ':'",
            id="yaml-syntax",
        ),
        pytest.param(
            "server: !!python/object:os.system {}\n",
            "gw.yaml:1: invalid YAML: could not determine a constructor for the tag"
            " 'tag:yaml.org,2002:python/object:os.system'",
            id="unsafe-tag",
        ),
        pytest.param(
            "x: &a [*a]\n", "gw.yaml:1: nested more than 32 levels (alias loop?)", id="alias-loop"
        ),
    ],
)
def test_errors_name_line_and_key(text: str, message: str):
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "gw.yaml")
    assert str(refused.value) == message


def test_a_billion_laughs_is_refused_quickly():
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(ConfigError, match="more than 100000 entries"):
        parse_config("\n".join(levels), "gw.yaml")


def test_merge_keys_may_override_but_explicit_duplicates_may_not():
    base = "engines:\n  - &e {name: a, model: demo, classes: [interactive, standard, batch]}\n"
    config = parse_config(base + "  - <<: *e\n    name: b\n")
    assert [e.name for e in config.engines] == ["a", "b"]
    with pytest.raises(ConfigError, match=r"^gw.yaml:5: engines\[1\].name: duplicate key"):
        parse_config(base + "  - <<: *e\n    name: b\n    name: c\n", "gw.yaml")


def test_types_are_the_public_ones():
    config = parse_config(ONE_ENGINE)
    assert isinstance(config, GatewayConfig)
    assert isinstance(config.engines[0], EngineSpec)
