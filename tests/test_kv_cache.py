"""Generation in the model itself: the KV cache computes what the plain forward computes, greedy decoding is
deterministic, and the sampling filters (temperature, top-k, top-p) keep what they promise. Random weights."""

from __future__ import annotations

import pytest
import torch

from bigtrain.model.gpt import GPT, GPTConfig, KVCache, sample_next

CONFIGS = {
    "nano": GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=256),
    "nobias-headdim": GPTConfig(n_layer=3, n_head=4, n_embd=48, head_dim=8, block_size=24, vocab_size=97, bias=False),
    # Llama-shaped: rotary positions (the cache holds rotated keys; new tokens rotate at their true position),
    # grouped-query (2 key/value heads for 4) and multi-query attention, RMSNorm, SwiGLU, untied head.
    **{
        name: GPTConfig(
            n_layer=2,
            n_head=4,
            n_kv_head=kv,
            n_embd=32,
            block_size=24,
            vocab_size=97,
            bias=False,
            norm="rmsnorm",
            mlp="swiglu",
            position="rope",
            tie_embeddings=False,
        )
        for name, kv in (("llama-gqa", 2), ("llama-mqa", 1))
    },
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(name: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIGS[name]).eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_logits_equal_full_forward(name):
    """Prompt in one piece, then a chunk of 3, then single tokens: every position's logits match one full pass."""
    model = _model(name)
    idx = torch.randint(0, model.config.vocab_size, (2, model.config.block_size))
    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache(model.config.n_layer, model.config.block_size)
        pieces = [model(idx[:, :5], cache=cache)[0], model(idx[:, 5:8], cache=cache)[0]]
        pieces += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(8, idx.size(1))]
    assert cache.length == model.config.block_size
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(idx[:, :1], cache=cache)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("prompt_len", [1, 7])
def test_greedy_is_deterministic_and_kv_equals_no_cache(name, prompt_len):
    """Past the context length too (the window slides and the cache is rebuilt)."""
    model = _model(name)
    idx = torch.randint(0, model.config.vocab_size, (3, prompt_len), generator=torch.Generator().manual_seed(1))
    n = model.config.block_size + 12
    cached = model.generate(idx, n, temperature=0, kv_cache=True)
    again = model.generate(idx, n, temperature=0, kv_cache=True)
    plain = model.generate(idx, n, temperature=0, kv_cache=False)
    assert cached.shape == (3, prompt_len + n)
    assert torch.equal(cached, again)
    assert torch.equal(cached, plain)
    assert torch.equal(cached[:, :prompt_len], idx)


def test_seeded_sampling_same_with_and_without_cache():
    model = _model("nano")
    idx = torch.tensor([[1, 2, 3]])
    runs = [model.generate(idx, 50, 0.9, 20, torch.Generator().manual_seed(7), top_p=0.9, kv_cache=kv) for kv in (1, 0)]
    assert torch.equal(*runs)
    other = model.generate(idx, 50, 0.9, 20, torch.Generator().manual_seed(8), top_p=0.9)
    assert not torch.equal(runs[0], other)  # the seed matters


def test_sampling_filters():
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0, -1.0]]).repeat(400, 1)
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, temperature=0).flatten().tolist() == [1] * 400
    top2 = set(sample_next(logits, 1.0, top_k=2, generator=g).flatten().tolist())
    assert top2 == {1, 2}
    # softmax([0,3,2,1,-1]) ~ [.03, .64, .23, .09, .01]: the nucleus for top_p=0.8 is {1, 2}; 0.5 keeps only 1.
    assert set(sample_next(logits, 1.0, top_p=0.8, generator=g).flatten().tolist()) == {1, 2}
    assert set(sample_next(logits, 1.0, top_p=0.5, generator=g).flatten().tolist()) == {1}
    assert len(set(sample_next(logits, 1.0, generator=g).flatten().tolist())) == 5
