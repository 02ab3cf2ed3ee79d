"""The GPT: published parameter counts, shapes, a training step, initialisation, generation."""

from __future__ import annotations

import math

import pytest
import torch

from bigtrain.model import GPT, GPTConfig, gpt_config_from
from tests.conftest import compose

# GPT-3 2.7B: the paper's Table 2.1 shapes hold 2.65B parameters; "2.7B" is the paper's rounding (1.8% above).
TOLERANCE = {"gpt3-2.7b": 0.02}
PUBLISHED = ["gpt2-124m", "gpt2-350m", "gpt2-774m", "gpt2-1.5b", "gpt3-2.7b", "gpt3-6.7b", "gpt3-13b", "gpt3-175b"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_count_matches_published(name):
    cfg = compose(f"model={name}").model
    with torch.device("meta"):  # shapes only: a 175B model costs nothing here
        model = GPT(gpt_config_from(cfg))
    n = model.num_params()
    assert cfg.published_n_params, "each named size cites its published count"
    assert abs(n - cfg.published_n_params) / cfg.published_n_params <= TOLERANCE.get(name, 0.01), (
        n,
        cfg.published_n_params,
    )


def test_gpt2_small_count_is_exact():
    with torch.device("meta"):
        model = GPT(GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257))
    assert model.num_params() == 124_439_808  # OpenAI's released checkpoint, tied embeddings counted once


def test_shapes_and_backward():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64)
    model = GPT(cfg)
    x = torch.randint(0, 64, (3, 16))
    logits, loss = model(x, x)
    assert logits.shape == (3, 16, 64)
    assert math.isclose(loss.item(), math.log(64), rel_tol=0.1)  # near chance at init
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.lm_head.weight is model.transformer.wte.weight  # tied


def test_decoupled_head_dim():
    cfg = GPTConfig(n_layer=1, n_head=4, n_embd=30, head_dim=8, block_size=8, vocab_size=16)
    model = GPT(cfg)
    assert model.transformer.h[0].attn.c_attn.weight.shape == (3 * 32, 30)
    logits, _ = model(torch.zeros(2, 8, dtype=torch.long))
    assert logits.shape == (2, 8, 16)


def test_gpt2_initialisation():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=64, vocab_size=512)
    model = GPT(cfg)
    block = model.transformer.h[0]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(block.attn.c_attn.bias) == 0


def test_sequence_longer_than_block_is_refused():
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4, vocab_size=8))
    with pytest.raises(ValueError, match="exceeds block_size 4"):
        model(torch.zeros(1, 5, dtype=torch.long))


def test_generate_greedy_is_deterministic_and_topk_restricts():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32)).eval()
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, 10, temperature=0)
    b = model.generate(prompt, 10, temperature=0)
    assert a.shape == (1, 13) and torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model.generate(prompt, 6, top_k=1, generator=g1), a[:, :9])  # top-1 sampling is greedy
    assert torch.equal(
        model.generate(prompt, 6, top_k=5, generator=g2),
        model.generate(prompt, 6, top_k=5, generator=torch.Generator().manual_seed(1)),
    )


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=32)
    plain = GPT(cfg)
    ckpt = GPT(GPTConfig(**{**cfg.__dict__, "activation_checkpointing": True}))
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randint(0, 32, (2, 8))
    for m in (plain, ckpt):
        m(x, x)[1].backward()
    for p, q in zip(plain.parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
