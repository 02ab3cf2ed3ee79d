"""A GPT in plain PyTorch: GPT-2/GPT-3 architecture, read top to bottom.

Pre-LayerNorm blocks, learned absolute positions, GELU MLP (4x), causal self-attention through
`scaled_dot_product_attention` (flash / memory-efficient kernels where the device has them), tied input and output
embeddings, optional biases, GPT-2 initialisation (N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)).

This file knows nothing about Lightning, DeepSpeed or parallelism. Every weight is initialised inside its own leaf
module's constructor (`reset_parameters`), never by a parent walking its children afterwards: under DeepSpeed's
`zero.Init` a leaf's parameters are partitioned as soon as its constructor returns, so a parent-level init would
silently touch empty shards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


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

    @property
    def attn_dim(self) -> int:
        """Width of the concatenated heads (= n_embd unless head_dim decouples it, as in GPT-3 13B)."""
        return self.n_head * (self.head_dim or self.n_embd // self.n_head)


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


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.attn_dim // config.n_head
        self.dropout = config.dropout
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        self.c_attn = InitLinear(config.n_embd, 3 * config.attn_dim, bias=config.bias)  # q, k, v for all heads
        self.c_proj = InitLinear(config.attn_dim, config.n_embd, bias=config.bias, std=residual_std)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).chunk(3, dim=2)
        # Heads counted from the tensor, not the config: a tensor-parallel rank holds only its share of them.
        nh = q.size(-1) // self.head_dim
        # (B, T, nh * hs) -> (B, nh, T, hs)
        q = q.view(B, T, nh, self.head_dim).transpose(1, 2)
        k = k.view(B, T, nh, self.head_dim).transpose(1, 2)
        v = v.view(B, T, nh, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, nh * self.head_dim)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        self.c_fc = InitLinear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = InitLinear(4 * config.n_embd, config.n_embd, bias=config.bias, std=residual_std)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 uses the tanh approximation of GELU; keeping it makes Hugging Face logits match exactly.
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=InitEmbedding(config.vocab_size, config.n_embd),
                wpe=InitEmbedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = InitLinear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017), as GPT-2 and GPT-3 do: one (vocab, n_embd) matrix serves both ends.
        self.lm_head.weight = self.transformer.wte.weight

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, tied ones counted once. non_embedding drops the position table (the token table is reused
        as the output layer, so it stays), the convention of Kaplan et al. 2020."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx: (B, T) token ids. Returns logits (B, T, vocab) and, with targets (B, T), the mean cross-entropy."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            if self.config.activation_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T). temperature 0 means greedy decoding."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size :]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :].float()  # (B, vocab)
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.size(-1):
                    kth = torch.topk(logits, top_k).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                next_id = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, next_id), dim=1)
        return idx
