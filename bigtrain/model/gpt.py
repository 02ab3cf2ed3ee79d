"""A GPT in plain PyTorch: GPT-2/GPT-3 by default, the Llama family by its knobs, read top to bottom.

Pre-norm blocks, causal self-attention through `scaled_dot_product_attention` (flash / memory-efficient kernels
where the device has them), GPT-2 initialisation (N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)).
The defaults are GPT-2's: LayerNorm, learned absolute positions, a GELU MLP (4x), as many key/value heads as query
heads, biases, tied input and output embeddings. The modern decoder (Llama 2/3, Mistral) changes five of them:
- norm=rmsnorm: RMSNorm (Zhang & Sennrich 2019), no mean subtraction and no bias, computed in fp32;
- mlp=swiglu: SiLU(x W_gate) * (x W_up) W_down (Shazeer 2020), hidden width from Llama's rule (bigtrain.model.shapes);
- position=rope: rotary embeddings (Su et al. 2021) rotate each head's q and k by position instead of adding a
  position table. Pairs are interleaved, (x0, x1), (x2, x3), ..., as in Meta's Llama code; Hugging Face's Llama
  rotates the halves (x_i, x_{i+hs/2}) instead, which bigtrain.hf.llama bridges by permuting q/k weight rows;
- n_kv_head < n_head: grouped-query attention (Ainslie et al. 2023; 1 is multi-query, Shazeer 2019): each key/value
  head serves n_head / n_kv_head query heads, and the KV cache stores only n_kv_head heads;
- tie_embeddings=false: the output head is its own matrix.

This file knows nothing about Lightning, DeepSpeed or parallelism. Every weight is initialised inside its own leaf
module's constructor (`reset_parameters`), never by a parent walking its children afterwards: under DeepSpeed's
`zero.Init` a leaf's parameters are partitioned as soon as its constructor returns, so a parent-level init would
silently touch empty shards.

Generation can keep a `KVCache`: the keys and values of the tokens already seen, so each new token costs one
position of compute instead of the whole prefix. Training never passes one; its path is the plain causal forward.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from bigtrain.model.moe import MoE
from bigtrain.model.shapes import attn_width, ffn_hidden_size, head_dim_of


@dataclass
class MoESettings:
    """Mixture of experts (bigtrain/model/moe.py); n_experts=0 is a dense model. Block i is an MoE block when
    i % every_n_layers == 0 (Megatron-Core's moe_layer_freq convention)."""

    n_experts: int = 0
    top_k: int = 2
    capacity_factor: float = 1.25
    eval_capacity_factor: float = 2.0
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.001
    every_n_layers: int = 1
    n_shared_experts: int = 0


@dataclass
class GPTConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 192
    block_size: int = 128
    vocab_size: int = 256
    head_dim: int | None = None  # None: n_embd // n_head
    dropout: float = 0.0
    bias: bool = True
    activation_checkpointing: bool = False
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    mlp: str = "gelu"  # gelu | swiglu
    ffn_hidden_size: int | None = None  # None: 4 x n_embd (gelu) or Llama's rule (swiglu, model/shapes.py)
    ffn_multiple_of: int = 256  # Llama's rule rounds the SwiGLU width up to a multiple of this
    ffn_dim_multiplier: float | None = None  # ... after scaling it by this (Llama 3: 1.3)
    position: str = "learned"  # learned | rope
    rope_theta: float = 10000.0  # rotary base (Llama 2: 1e4, Llama 3: 5e5)
    n_kv_head: int | None = None  # None: n_head (multi-head); 1: multi-query; between: grouped-query
    tie_embeddings: bool = True
    moe: MoESettings = field(default_factory=MoESettings)

    def __post_init__(self):
        if not isinstance(self.moe, MoESettings):  # a config node or a checkpoint's plain dict
            self.moe = MoESettings(**dict(self.moe or {}))

    def is_moe_layer(self, layer: int) -> bool:
        return self.moe.n_experts > 0 and layer % self.moe.every_n_layers == 0

    @property
    def head_size(self) -> int:
        return head_dim_of(self.n_embd, self.n_head, self.head_dim)

    @property
    def attn_dim(self) -> int:
        """Width of the concatenated heads (= n_embd unless head_dim decouples it, as in GPT-3 13B)."""
        return attn_width(self.n_embd, self.n_head, self.head_dim)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def kv_dim(self) -> int:
        """Width of the keys (and of the values): n_kv_head heads."""
        return self.kv_heads * self.head_size

    @property
    def ffn_dim(self) -> int:
        return ffn_hidden_size(
            self.n_embd, self.mlp, self.ffn_hidden_size, self.ffn_multiple_of, self.ffn_dim_multiplier
        )


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated to max_len positions.

    Layer i's attention calls `append(i, k, v)` with the new positions' (B, nh, T, hs) keys and values and gets
    back all of them so far; `GPT.forward` advances `length` once every layer has appended.
    """

    def __init__(self, n_layer: int, max_len: int):
        self.max_len = max_len
        self.length = 0  # positions already cached (= position of the next token)
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, nh, T, hs = k.shape
        if self.k[layer] is None:  # allocated on first use, so the cache takes the model's device and dtype
            self.k[layer] = k.new_zeros(B, nh, self.max_len, hs)
            self.v[layer] = v.new_zeros(B, nh, self.max_len, hs)
        end = self.length + T
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, nh, length + T, hs)


class InitLinear(nn.Linear):
    """nn.Linear initialised N(0, std) with zero bias in its own constructor (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, std: float = 0.02, **kwargs):
        self.init_std = std
        super().__init__(in_features, out_features, bias=bias, **kwargs)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=self.init_std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class InitEmbedding(nn.Embedding):
    """nn.Embedding initialised N(0, 0.02), GPT-2's choice for both token and position tables."""

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=0.02)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, normalised in fp32 and cast back before the gain (as Meta's Llama and
    Hugging Face compute it, so bf16 training keeps the reduction exact enough)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


def rope_cos_sin(start: int, length: int, head_size: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (length, hs/2) of the rotary angles pos * theta^(-2i/hs) for positions start .. start+length-1,
    in fp32. Recomputed per call: O(T * hs) next to attention's O(T^2 * hs), and no buffer to shard or move."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2, device=device, dtype=torch.float32) / head_size)
    pos = torch.arange(start, start + length, device=device, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)  # (T, hs/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each interleaved pair (x[2i], x[2i+1]) of x (B, nh, T, hs) by its angle (cos, sin: (T, hs/2))."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (B, nh, T, hs/2) each
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.layer = layer  # index into a KVCache
        self.head_dim = config.head_size
        self.group = config.n_head // config.kv_heads  # query heads per key/value head
        self.rope_theta = config.rope_theta if config.position == "rope" else None
        self.dropout = config.dropout
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        # q for n_head heads, k and v for n_kv_head heads, in one matrix: [q | k | v] along the output.
        width = config.attn_dim + 2 * config.kv_dim
        self.c_attn = InitLinear(config.n_embd, width, bias=config.bias)
        self.c_proj = InitLinear(config.attn_dim, config.n_embd, bias=config.bias, std=residual_std)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.c_attn(x)
        # Heads counted from the tensor, not the config: a tensor-parallel rank holds only its share of them
        # (n_head / tp query and n_kv_head / tp key/value heads, so the group size is the same on every rank).
        n_kv = qkv.size(-1) // (self.head_dim * (self.group + 2))
        nh = n_kv * self.group
        q, k, v = qkv.split([nh * self.head_dim, n_kv * self.head_dim, n_kv * self.head_dim], dim=2)
        # (B, T, heads * hs) -> (B, heads, T, hs)
        q = q.view(B, T, nh, self.head_dim).transpose(1, 2)
        k = k.view(B, T, n_kv, self.head_dim).transpose(1, 2)
        v = v.view(B, T, n_kv, self.head_dim).transpose(1, 2)
        past = cache.length if cache is not None else 0
        if self.rope_theta is not None:
            cos, sin = rope_cos_sin(past, T, self.head_dim, self.rope_theta, x.device)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # Grouped/multi-query: SDPA lets each k/v head serve its group of query heads without copying it.
        gqa = {"enable_gqa": True} if self.group > 1 else {}
        if cache is None or past == 0:
            if cache is not None:
                cache.append(self.layer, k, v)  # the prompt: plain causal attention, keys kept for later
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True, **gqa
            )  # (B, nh, T, hs)
        else:
            k, v = cache.append(self.layer, k, v)  # (B, n_kv, past + T, hs)
            # New query i sits at position past + i and sees keys 0 .. past + i (one new token: all of them).
            mask = None
            if T > 1:
                mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **gqa)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, nh * self.head_dim)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        self.c_fc = InitLinear(config.n_embd, config.ffn_dim, bias=config.bias)
        self.c_proj = InitLinear(config.ffn_dim, config.n_embd, bias=config.bias, std=residual_std)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 uses the tanh approximation of GELU; keeping it makes Hugging Face logits match exactly.
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class SwiGLU(nn.Module):
    """Llama's MLP: down(silu(gate(x)) * up(x)), three matrices of ffn_dim (Shazeer 2020, "GLU Variants")."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        self.gate_proj = InitLinear(config.n_embd, config.ffn_dim, bias=config.bias)
        self.up_proj = InitLinear(config.n_embd, config.ffn_dim, bias=config.bias)
        self.down_proj = InitLinear(config.ffn_dim, config.n_embd, bias=config.bias, std=residual_std)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = make_norm(config)
        if config.is_moe_layer(layer):
            m = config.moe
            self.mlp = MoE(
                config.n_embd, config.ffn_dim, config.mlp, config.bias, config.n_layer, m.n_experts, m.top_k,
                m.capacity_factor, m.eval_capacity_factor, m.n_shared_experts, config.dropout,
            )  # fmt: skip
        else:
            self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        parts: dict[str, nn.Module] = {"wte": InitEmbedding(config.vocab_size, config.n_embd)}
        if config.position == "learned":  # rotary positions live inside attention and have no table
            parts["wpe"] = InitEmbedding(config.block_size, config.n_embd)
        parts["drop"] = nn.Dropout(config.dropout)
        parts["h"] = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        parts["ln_f"] = make_norm(config)
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = InitLinear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # Weight tying (Press & Wolf 2017), as GPT-2 and GPT-3 do: one (vocab, n_embd) matrix serves both ends.
            self.lm_head.weight = self.transformer.wte.weight

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, tied ones counted once. non_embedding drops the lookup tables, the convention of Kaplan et
        al. 2020: the position table, and the token table unless it is also the output layer (tied)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.transformer.wte.weight.numel()
        return n

    def moe_stats(self) -> dict[str, torch.Tensor]:
        """The last forward's routing, averaged over the MoE blocks: aux_loss and z_loss (with gradients, unweighted),
        load (E,) and dropped_frac; empty for a dense model."""
        layers = [m.stats for m in self.modules() if isinstance(m, MoE) and m.stats]
        if not layers:
            return {}
        return {k: torch.stack([s[k] for s in layers]).mean(dim=0) for k in layers[0]}

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """idx: (B, T) token ids. Returns logits (B, T, vocab) and, with targets (B, T), the mean cross-entropy.
        With a cache, idx holds only the positions after the cached ones, and their keys and values join it."""
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if past + T > self.config.block_size:
            raise ValueError(f"sequence length {past + T} exceeds block_size {self.config.block_size}")
        x = embed(self.transformer, idx, past)  # (B, T, C)
        for block in self.transformer.h:
            if cache is not None:
                x = block(x, cache)
            elif self.config.activation_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if cache is not None:
            cache.length += T
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate_tokens(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        kv_cache: bool = True,
    ) -> Iterator[torch.Tensor]:
        """Yield max_new_tokens next tokens (B, 1), one at a time, continuing idx (B, T); see `sample_next`.

        Without kv_cache every step runs the whole window again. With it, the prompt runs once and each step feeds
        one token; when the window is full the context slides, positions shift, and the cache is rebuilt from the
        last block_size tokens, so both paths compute the same logits at every step.
        """
        block_size = self.config.block_size
        cache: KVCache | None = None
        for _ in range(max_new_tokens):
            if not kv_cache:
                logits, _ = self(idx[:, -block_size:])
            elif cache is None or cache.length >= block_size:
                cache = KVCache(self.config.n_layer, block_size)
                logits, _ = self(idx[:, -block_size:], cache=cache)
            else:
                logits, _ = self(idx[:, -1:], cache=cache)
            next_id = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat((idx, next_id), dim=1)
            yield next_id

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        top_p: float | None = None,
        kv_cache: bool = True,
    ) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T). temperature 0 means greedy decoding."""
        new = list(self.generate_tokens(idx, max_new_tokens, temperature, top_k, top_p, generator, kv_cache))
        return torch.cat([idx, *new], dim=1)


def embed(transformer: nn.ModuleDict, idx: torch.Tensor, past: int = 0) -> torch.Tensor:
    """(B, T) token ids at positions past .. past+T-1 -> (B, T, C): token embeddings plus, with learned positions,
    the position table's rows; then dropout. Module-level so a pipeline stage holding the tables can call it."""
    x = transformer.wte(idx)
    if "wpe" in transformer:
        pos = torch.arange(past, past + idx.size(1), dtype=torch.long, device=idx.device)
        x = x + transformer.wpe(pos)
    return transformer.drop(x)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of logits (B, vocab) -> (B, 1). temperature 0 is greedy (argmax); otherwise sample
    from softmax(logits / temperature), keeping only the top_k likeliest tokens and then the smallest set whose
    probability reaches top_p (nucleus sampling, Holtzman et al. 2019)."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the likelier ones already reach top_p; the likeliest token always stays.
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
