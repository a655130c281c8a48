"""The demo model: a tiny random-weight Llama that vLLM serves with no network at all.

``ensure_demo_model()`` builds it once into a cache directory and returns that
directory, ready for ``vllm`` (``config.json``, ``generation_config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``). The weights are
seeded noise, so its text is noise too, but its shapes, tokenizer and timings are real:
it is the model of the embedded default config, of CI and of the load tests.

The tokenizer is a byte-level BPE trained here on this interpreter's standard-library
sources, so any UTF-8 text round-trips. Builds are deterministic: the same spec on the
same Python gives byte-identical files. The cache entry's name carries a digest of the
spec, so changing the spec builds a new entry instead of reusing a stale one.

Run ``python -m engines.demo_model`` to build it and print its directory, e.g. to
start plain vLLM on exactly the same model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_MODEL_NAME = "slagate-demo"
# float32: on this CPU vLLM's own OpenAI server dies with SIGILL (its worker exits with
# -4) on the first bf16 request, while fp32 runs everywhere. Plain vLLM must run on
# exactly the demo model for side-by-side numbers, so the demo model is fp32.
DEMO_MODEL_DTYPE = "float32"

# ChatML, with BOS first as Llama tokenizers do; unknown roles fail loudly, not silently.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unsupported role: ' + message['role']) }}"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True, slots=True)
class DemoModelSpec:
    """Everything that decides the built files. Its digest names the cache entry."""

    build_version: int = 1  # bump when the build code changes what it writes
    num_hidden_layers: int = 2
    hidden_size: int = 128
    intermediate_size: int = 512
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 1024
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    dtype: str = DEMO_MODEL_DTYPE
    seed: int = 0
    init_std: float = 0.02  # every matrix; logits come out small and varied, never saturated
    corpus_chars: int = 4_000_000  # tokenizer training text; ~1 s on one core
    # ids follow this order: <unk>=0, <s>=1, </s>=2, <pad>=3, then the chat markers
    special_tokens: tuple[str, ...] = (
        "<unk>",
        "<s>",
        "</s>",
        "<pad>",
        "<|im_start|>",
        "<|im_end|>",
    )
    chat_template: str = CHAT_TEMPLATE

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def digest(self) -> str:
        """A short hash of every field: the cache entry's version."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:10]

    def token_id(self, token: str) -> int:
        return self.special_tokens.index(token)


DEMO_SPEC = DemoModelSpec()
_ABANDONED_AFTER_S = 600.0  # a build takes seconds; a staging dir this old was abandoned


def default_cache_dir() -> Path:
    """``$SLAGATE_CACHE_DIR`` if set, else ``~/.cache/slagate``."""
    configured = os.environ.get("SLAGATE_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "slagate"


def ensure_demo_model(cache_dir: Path | None = None, spec: DemoModelSpec = DEMO_SPEC) -> Path:
    """Return the demo model's directory under ``cache_dir``, building it if absent.

    The build goes into a private temporary directory that is renamed into place only
    when complete, so a killed build or two concurrent builders never leave a partial
    model where a reader could find it: the loser of a race discards its copy.
    """
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    final = cache_dir / f"{DEMO_MODEL_NAME}-{spec.digest()}"
    if final.is_dir():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(cache_dir, final.name)
    started = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", dir=cache_dir))
    try:
        build_demo_model(staging, spec)
        # mkdtemp and safetensors make owner-only entries; a model cache is for everyone
        # who runs the gateway or plain vLLM on this machine.
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        try:
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():
                raise
            logger.info("another process finished the demo model first; using %s", final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built demo model in %.1f s: %s", time.monotonic() - started, final)
    return final


def _remove_abandoned_builds(cache_dir: Path, name: str) -> None:
    """Delete staging dirs whose builder process is gone (killed mid-build)."""
    # The age test too: a builder in another pid namespace (a container sharing the
    # cache) looks dead from here, but no build runs for anything like this long.
    cutoff = time.time() - _ABANDONED_AFTER_S
    for staging in cache_dir.glob(f".{name}.*"):
        pid = staging.name.removeprefix(f".{name}.").split(".", 1)[0]
        try:
            old = staging.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue  # its builder just renamed or removed it
        if old and pid.isdigit() and not _process_alive(int(pid)):
            logger.info("removing abandoned demo-model build %s", staging)
            shutil.rmtree(staging, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def build_demo_model(out: Path, spec: DemoModelSpec = DEMO_SPEC) -> None:
    """Write the model files into the existing directory ``out`` (no caching, no rename)."""
    _write_tokenizer(out, spec)
    _write_json(out / "config.json", model_config(spec))
    _write_json(out / "generation_config.json", _generation_config(spec))
    _write_weights(out / "model.safetensors", spec)


def model_config(spec: DemoModelSpec = DEMO_SPEC) -> dict[str, object]:
    """The Hugging Face ``config.json`` contents for ``spec``."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope_theta,
        "rope_scaling": None,
        "hidden_act": "silu",
        "initializer_range": spec.init_std,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "bos_token_id": spec.token_id("<s>"),
        "eos_token_id": spec.token_id("</s>"),
        "pad_token_id": spec.token_id("<pad>"),
        "tie_word_embeddings": False,
        # transformers 5 reads "dtype", older releases (and vLLM on them) "torch_dtype"
        "dtype": spec.dtype,
        "torch_dtype": spec.dtype,
        "use_cache": True,
    }


def _generation_config(spec: DemoModelSpec) -> dict[str, object]:
    # <|im_end|> also stops: chat turns end with it rather than with </s>.
    return {
        "bos_token_id": spec.token_id("<s>"),
        "eos_token_id": [spec.token_id("</s>"), spec.token_id("<|im_end|>")],
        "pad_token_id": spec.token_id("<pad>"),
    }


def _write_json(path: Path, data: Mapping[str, object]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_tokenizer(out: Path, spec: DemoModelSpec) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=list(spec.special_tokens),
        # every byte is in the base vocabulary, so no text ever needs <unk>
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_corpus(spec.corpus_chars), trainer)
    if tokenizer.get_vocab_size() != spec.vocab_size:
        raise RuntimeError(
            f"tokenizer training gave {tokenizer.get_vocab_size()} tokens, "
            f"expected {spec.vocab_size}: too little training text?"
        )
    bos = "<s>"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, spec.token_id(bos))]
    )
    tokenizer.save(str(out / "tokenizer.json"))
    # Written by hand rather than by PreTrainedTokenizerFast.save_pretrained: transformers 5
    # names its own "TokenizersBackend" class there and moves the template to a separate
    # file, which the transformers 4 releases under older vLLM builds cannot load.
    special = {"bos_token": bos, "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "model_max_length": spec.max_position_embeddings,
            "clean_up_tokenization_spaces": False,
            "chat_template": spec.chat_template,
        },
    )
    _write_json(out / "special_tokens_map.json", special)


def _corpus(max_chars: int) -> Iterator[str]:
    """Top-level stdlib modules in name order, up to ``max_chars`` characters."""
    total = 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        yield text
        total += len(text)
        if total >= max_chars:
            return


def _write_weights(path: Path, spec: DemoModelSpec) -> None:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(spec.seed)
    dtype = getattr(torch, spec.dtype)

    def normal(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * spec.init_std).to(dtype)

    def ones(size: int) -> torch.Tensor:
        return torch.ones(size, dtype=dtype)

    hidden, inter, head_dim = spec.hidden_size, spec.intermediate_size, spec.head_dim
    q_out, kv_out = spec.num_attention_heads * head_dim, spec.num_key_value_heads * head_dim
    tensors = {"model.embed_tokens.weight": normal(spec.vocab_size, hidden)}
    for layer in range(spec.num_hidden_layers):
        prefix = f"model.layers.{layer}"
        tensors |= {
            f"{prefix}.input_layernorm.weight": ones(hidden),
            f"{prefix}.self_attn.q_proj.weight": normal(q_out, hidden),
            f"{prefix}.self_attn.k_proj.weight": normal(kv_out, hidden),
            f"{prefix}.self_attn.v_proj.weight": normal(kv_out, hidden),
            f"{prefix}.self_attn.o_proj.weight": normal(hidden, q_out),
            f"{prefix}.post_attention_layernorm.weight": ones(hidden),
            f"{prefix}.mlp.gate_proj.weight": normal(inter, hidden),
            f"{prefix}.mlp.up_proj.weight": normal(inter, hidden),
            f"{prefix}.mlp.down_proj.weight": normal(hidden, inter),
        }
    tensors["model.norm.weight"] = ones(hidden)
    tensors["lm_head.weight"] = normal(spec.vocab_size, hidden)
    save_file(tensors, str(path), metadata={"format": "pt"})


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    # torch may chat on stdout; only the path belongs there.
    with contextlib.redirect_stdout(sys.stderr):
        path = ensure_demo_model()
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
