"""Span-scoring heads: GlobalPointer and Efficient GlobalPointer.

Both map token features ``h`` of shape (B, L, H) to scores (B, T, L, L), where
``scores[b, t, i, j]`` rates tokens i..j as an entity of type t. Heads return raw
scores for every cell; which cells are valid (i <= j, both real characters) is the
caller's business (:func:`valid_cells`), so the same scores feed losses, soft labels,
divergences and decoding without masking constants baked in.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_tables(length: int, dim: int, device=None, dtype=torch.float32, base: float = 10000.0):
    """cos and sin tables of shape (L, dim) for interleaved rotary position embedding.

    Pair m of the feature vector, (x[2m], x[2m+1]), rotates by angle p * base^(-2m/dim).
    Each angle is repeated for both members of its pair with ``repeat_interleave``:
    ``repeat`` would pair x[m] with x[m + dim/2] and break the relative-position property.
    """
    if dim % 2:
        raise ValueError(f"RoPE needs an even head size, got {dim}")
    inv_freq = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos = angles.cos().repeat_interleave(2, dim=-1).to(dtype)
    sin = angles.sin().repeat_interleave(2, dim=-1).to(dtype)
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., D) position-wise; ``cos``/``sin`` broadcast to it ((L, D) for
    (..., L, D), or shaped to the position axis of another layout)."""
    rotated = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).reshape(x.shape)
    return x * cos + rotated * sin


def valid_cells(char_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) boolean: i <= j and both tokens are real characters."""
    pair = char_mask[:, None, :, None] & char_mask[:, None, None, :]
    return torch.triu(pair, diagonal=0)


class GlobalPointer(nn.Module):
    """Per type t: q_t, k_t = linear(h); RoPE; s_t(i, j) = q_t,i . k_t,j / sqrt(d)."""

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64, rope: bool = True):
        super().__init__()
        self.num_types, self.head_size, self.rope = num_types, head_size, rope
        self.dense = nn.Linear(hidden_size, num_types * head_size * 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scores(self.dense(h))

    def scores(self, projected: torch.Tensor) -> torch.Tensor:
        """Span scores from the projected features (B, L, T * 2d)."""
        b, length, _ = projected.shape
        qk = projected.view(b, length, self.num_types, 2, self.head_size)
        if self.rope:  # q and k of every type rotated in one pass, in the projection's layout
            cos, sin = rope_tables(length, self.head_size, qk.device, qk.dtype)
            qk = apply_rope(qk, cos[:, None, None, :], sin[:, None, None, :])
        qk = qk.permute(0, 2, 3, 1, 4)  # (B, T, 2, L, d)
        # scaling q (B, T, L, d) is cheaper than scaling the (B, T, L, L) scores
        q, k = qk[:, :, 0] / math.sqrt(self.head_size), qk[:, :, 1]
        return torch.matmul(q, k.transpose(-1, -2))


class EfficientGlobalPointer(nn.Module):
    """Shared q, k for all types plus a per-type start/end bias (kexue.fm/archives/8877).

    s_t(i, j) = q_i . k_j / sqrt(d) + b_t,start(i) + b_t,end(j), with the biases a
    linear map of the projected features: far fewer parameters than one q, k per type.
    """

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64, rope: bool = True):
        super().__init__()
        self.num_types, self.head_size, self.rope = num_types, head_size, rope
        self.dense = nn.Linear(hidden_size, head_size * 2)
        self.bias = nn.Linear(head_size * 2, num_types * 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scores(self.dense(h))

    def scores(self, projected: torch.Tensor) -> torch.Tensor:
        """Span scores from the projected features (B, L, 2d)."""
        q, k = projected[..., 0::2], projected[..., 1::2]
        if self.rope:
            cos, sin = rope_tables(projected.shape[1], self.head_size, projected.device, q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        shared = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)  # (B, L, L)
        bias = self.bias(projected).transpose(1, 2) / 2  # (B, 2T, L)
        start, end = bias[:, 0::2, :, None], bias[:, 1::2, None, :]
        return shared[:, None] + start + end


HEADS = {"gp": GlobalPointer, "efficient_gp": EfficientGlobalPointer}


def build_head(kind: str, hidden_size: int, num_types: int, head_size: int, rope: bool) -> nn.Module:
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; known: {sorted(HEADS)}")
    return HEADS[kind](hidden_size, num_types, head_size, rope)
