"""Transformer text decoder with an explicit key/value cache.

The self-attention cache is two tensors ``[B, layers, heads, past, head_dim]`` (keys, values)
passed in and returned grown by the new tokens, so the exported decoder-step graph decodes
incrementally and the runtime can reorder it for beam search with a plain gather on axis 0.
The image tokens' keys and values (``[B, layers, heads, S, head_dim]``) are computed once by
the encoder graph, not at every step.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn


class CrossAttention(nn.Module):
    """Attention on the image tokens; their keys/values are projected once per study
    (:meth:`project`) and reused at every decoding step."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def project(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``memory[B, S, D]`` -> keys, values ``[B, heads, S, head_dim]``."""
        b = memory.shape[0]
        k, v = self.kv(memory).view(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        weights = torch.softmax(q @ keys.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
        return self.out((weights @ values).transpose(1, 2).reshape(b, t, d))


class CachedSelfAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, dim=-1) @ v
        return self.out(out.transpose(1, 2).reshape(b, t, d)), k, v


class DecoderLayer(nn.Module):
    """Pre-norm: self-attention (cached), cross-attention on image tokens, feed-forward."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.self_attn = CachedSelfAttention(d_model, num_heads)
        self.cross_attn = CrossAttention(d_model, num_heads)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        past_k: torch.Tensor,
        past_v: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attended, k, v = self.self_attn(self.norm1(x), past_k, past_v, mask)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.cross_attn(self.norm2(x), cross_k, cross_v))
        x = x + self.dropout(self.ffn(self.norm3(x)))
        return x, k, v


class TextDecoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        max_positions: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} must be divisible by num_heads {num_heads}")
        self.num_layers, self.num_heads = num_layers, num_heads
        self.head_dim = d_model // num_heads
        self.max_positions = max_positions
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_positions, d_model)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight  # tied: fewer parameters, better small-data fit
        # Small embeddings (GPT-2's 0.02): with the tied head, N(0, 1) would start the logits
        # at a standard deviation of sqrt(d_model) and the loss far above log(vocab).
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def empty_cache(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        return torch.zeros(batch, self.num_layers, self.num_heads, 0, self.head_dim, device=device)

    def cross_cache(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image-token keys and values of every layer ``[B, layers, heads, S, head_dim]``,
        computed once per study instead of at every step."""
        pairs = [cast(DecoderLayer, layer).cross_attn.project(memory) for layer in self.layers]
        return (
            torch.stack([k for k, _ in pairs], dim=1),
            torch.stack([v for _, v in pairs], dim=1),
        )

    def forward(
        self,
        tokens: torch.Tensor,
        cross_keys: torch.Tensor,
        cross_values: torch.Tensor,
        past_keys: torch.Tensor,
        past_values: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``tokens[B, T]`` after ``past`` cached positions -> logits ``[B, T, V]`` and cache."""
        past = past_keys.shape[3]
        steps = tokens.shape[1]
        positions = torch.arange(steps, device=tokens.device) + past
        x = self.embed(tokens) + self.pos(positions).unsqueeze(0)
        key_positions = torch.arange(past + steps, device=tokens.device)
        mask = key_positions.unsqueeze(0) <= positions.unsqueeze(1)  # causal over cache + new
        keys, values = [], []
        for index, layer in enumerate(self.layers):
            x, k, v = layer(
                x,
                cross_keys[:, index],
                cross_values[:, index],
                past_keys[:, index],
                past_values[:, index],
                mask,
            )
            keys.append(k)
            values.append(v)
        logits = self.lm_head(self.norm(x))
        return logits, torch.stack(keys, dim=1), torch.stack(values, dim=1)
