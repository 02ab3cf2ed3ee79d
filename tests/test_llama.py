"""The modern decoder family (RMSNorm, SwiGLU, rotary positions, grouped-query attention, untied embeddings) and the
Llama-shaped configs: published parameter counts, the GPT-2 default unchanged to the bit, the meaning of each knob
checked against an independent computation, and the one-line refusals of impossible shapes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from bigtrain.config.validate import problems_of
from bigtrain.model import GPT, GPTConfig, gpt_config_from
from bigtrain.model.gpt import KVCache, apply_rope, rope_cos_sin
from bigtrain.model.shapes import swiglu_hidden_size
from tests.conftest import REPO, compose

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Every shipped model that names a published count and uses the Llama switches: generated from conf/model.
LLAMAS = sorted(p.stem for p in (REPO / "conf" / "model").glob("llama*.yaml"))
# The SwiGLU widths the released checkpoints have (params.json / HF config.json intermediate_size).
PUBLISHED_FFN = {
    "llama2-7b": 11008,
    "llama2-13b": 13824,
    "llama2-70b": 28672,
    "llama3-8b": 14336,
    "llama3-70b": 28672,
    "llama3-405b": 53248,
}
LLAMA_NANO = dict(
    n_layer=2,
    n_head=4,
    n_kv_head=2,
    n_embd=32,
    block_size=16,
    vocab_size=64,
    bias=False,
    norm="rmsnorm",
    mlp="swiglu",
    position="rope",
    tie_embeddings=False,
)


def test_every_llama_config_is_covered():
    assert set(LLAMAS) == set(PUBLISHED_FFN)


@pytest.mark.parametrize("name", LLAMAS)
def test_llama_parameter_counts_match_published(name):
    cfg = compose(f"model={name}").model
    with torch.device("meta"):
        model = GPT(gpt_config_from(cfg))
    n = model.num_params()
    assert abs(n / cfg.published_n_params - 1) <= 0.01, (name, n, cfg.published_n_params)
    assert model.config.ffn_dim == PUBLISHED_FFN[name]  # Llama's width rule, from the config's multiple/multiplier
    assert model.lm_head.weight is not model.transformer.wte.weight  # untied, as released
    assert "wpe" not in model.transformer  # rotary: no position table


def test_tiny_llama_is_tinys_size():
    with torch.device("meta"):
        tiny = GPT(gpt_config_from(compose("model=tiny").model)).num_params()
        llama = GPT(gpt_config_from(compose("model=tiny-llama").model)).num_params()
    assert abs(llama / tiny - 1) < 0.02, (llama, tiny)


def test_swiglu_width_rule():
    assert swiglu_hidden_size(4096) == 11008  # Llama 2 7B
    assert swiglu_hidden_size(4096, 1024, 1.3) == 14336  # Llama 3 8B
    assert swiglu_hidden_size(16384, 4096, 1.2) == 53248  # Llama 3.1 405B
    assert GPTConfig(n_embd=64).ffn_dim == 256 and GPTConfig(n_embd=64, ffn_hidden_size=100).ffn_dim == 100


def _fingerprint(model: GPT) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def test_gpt2_default_is_unchanged():
    """Golden values of the GPT-2 default recorded before the Llama knobs existed: the same parameter names and
    initial weights to the bit (the same RNG draws in the same order) and the same loss."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32))
    assert _fingerprint(model) == "7adfb6595da4baa5988a8b34ff7c7ced2afd79a54bd6320b57336937f4c38891"
    x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    _, loss = model(x, x)
    assert loss.item() == pytest.approx(5.148934364318848, abs=1e-6)


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_grouped_query_attention_equals_multi_head_with_shared_keys(n_kv_head):
    """GQA/MQA is multi-head attention whose key/value heads are copies within each group: a multi-head model
    given the repeated k/v rows computes the same logits."""
    torch.manual_seed(0)
    gqa = GPT(GPTConfig(**{**LLAMA_NANO, "n_kv_head": n_kv_head})).eval()
    mha = GPT(GPTConfig(**{**LLAMA_NANO, "n_kv_head": 4})).eval()
    hs, group = 8, 4 // n_kv_head
    state = gqa.state_dict()
    for i in range(2):
        w = state[f"transformer.h.{i}.attn.c_attn.weight"]  # [q (32) | k (n_kv*8) | v (n_kv*8)] rows
        q, k, v = w.split([32, n_kv_head * hs, n_kv_head * hs])
        widen = lambda t: t.view(n_kv_head, 1, hs, -1).expand(-1, group, -1, -1).reshape(4 * hs, -1)  # noqa: E731
        state[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat([q, widen(k), widen(v)])
    mha.load_state_dict(state)
    x = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(gqa(x)[0], mha(x)[0], atol=1e-5, rtol=0)
    assert gqa.num_params() < mha.num_params()


def test_kv_cache_stores_only_the_key_value_heads():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**LLAMA_NANO, "n_kv_head": 1})).eval()
    cache = KVCache(2, 16)
    with torch.no_grad():
        model(torch.randint(0, 64, (3, 5)), cache=cache)
    assert cache.k[0].shape == (3, 1, 16, 8) and cache.v[1].shape == (3, 1, 16, 8)  # (B, n_kv_head, max_len, hs)


def test_rope_scores_depend_only_on_relative_position():
    """Rotating q at position m and k at n gives q.k that depends on n - m only (Su et al. 2021, eq. 16), and
    position 0 is the identity."""
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        cm, sm = rope_cos_sin(m, 1, 16, 10000.0, "cpu")
        cn, sn = rope_cos_sin(n, 1, 16, 10000.0, "cpu")
        return float((apply_rope(q, cm, sm) * apply_rope(k, cn, sn)).sum())

    assert score(3, 7) == pytest.approx(score(10, 14), abs=1e-5)  # the angles are fp32
    assert score(3, 7) != pytest.approx(score(3, 8), abs=1e-3)
    c0, s0 = rope_cos_sin(0, 1, 16, 10000.0, "cpu")
    torch.testing.assert_close(apply_rope(q, c0, s0), q)


def test_rmsnorm_swiglu_and_untied_head_are_what_they_say():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**LLAMA_NANO))
    names = {n for n, _ in model.named_parameters()}
    assert "transformer.h.0.ln_1.weight" in names and "transformer.h.0.ln_1.bias" not in names  # RMSNorm: gain only
    assert {"transformer.h.0.mlp.gate_proj.weight", "transformer.h.0.mlp.up_proj.weight"} <= names
    assert "lm_head.weight" in names and not any(n.endswith(".bias") for n in names)
    block, x = model.transformer.h[0], torch.randn(2, 5, 32)
    rms = x / x.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()
    torch.testing.assert_close(block.ln_1(x), rms * block.ln_1.weight)
    m = block.mlp
    ref = (torch.nn.functional.silu(x @ m.gate_proj.weight.T) * (x @ m.up_proj.weight.T)) @ m.down_proj.weight.T
    torch.testing.assert_close(m(x), ref)
    loss = model(torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16)))[1]
    loss.backward()
    assert model.lm_head.weight.grad is not None and model.transformer.wte.weight.grad is not None


def _problems(*overrides: str) -> str:
    return "; ".join(problems_of(compose(*overrides)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.n_kv_head=3"], "model.n_head=4 is not divisible by model.n_kv_head=3"),
        (
            ["model.n_head=2", "model.n_embd=34"],
            "model.position=rope rotates pairs of channels but the head size is odd",
        ),
        (["model.norm=batchnorm"], "model.norm=batchnorm is unknown; valid: layernorm, rmsnorm"),
        (["model.mlp=relu"], "model.mlp=relu is unknown; valid: gelu, swiglu"),
        (["model.position=alibi"], "model.position=alibi is unknown; valid: learned, rope"),
        (
            ["model.n_kv_head=1", "parallelism=tp", "hardware.devices=2"],
            "parallelism.tp=2 does not divide model.n_kv_head=1: each rank needs whole key/value heads; valid tp: 1",
        ),
        (
            ["model.ffn_hidden_size=577", "parallelism=tp", "hardware.devices=2"],
            "parallelism.tp=2 does not divide the MLP width 577",
        ),
    ],
)
def test_impossible_shapes_are_refused_in_one_line(overrides, message):
    assert message in _problems("model=tiny-llama", *overrides)


def test_llama_configs_are_valid():
    for name in [*LLAMAS, "tiny-llama"]:
        assert _problems(f"model={name}") == "", name
    assert _problems("model=tiny-llama", "parallelism=tp", "hardware.devices=2") == ""


def test_config_files_name_their_source():
    for name in LLAMAS:
        text = (Path(REPO) / "conf" / "model" / f"{name}.yaml").read_text()
        assert text.startswith("# Llama") and "Touvron" in text or "Dubey" in text, name
