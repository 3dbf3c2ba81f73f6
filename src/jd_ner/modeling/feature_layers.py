"""Layers for the write-up's feature tricks: layer fusion, pinyin/glyph CNNs, lexicon embedding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LayerFusion(nn.Module):
    """Per-token mix of the last k hidden layers.

    ``softmax``: weights softmax_k(Dense_k(h_k)) computed per token, one Dense(1) per layer;
    ``mean``: the plain average of the k layers.
    """

    def __init__(self, hidden_size: int, k: int, mode: str = "softmax"):
        super().__init__()
        if mode not in ("softmax", "mean"):
            raise ValueError(f"layer fusion mode must be softmax or mean, not {mode!r}")
        self.k, self.mode = k, mode
        self.scorers = nn.ModuleList(nn.Linear(hidden_size, 1) for _ in range(k)) \
            if mode == "softmax" else None

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(layers) < self.k:
            raise ValueError(f"layer fusion over {self.k} layers, but the encoder has {len(layers)}"
                             " (embeddings included)")
        last = torch.stack(list(layers[-self.k :]), dim=2)  # (B, L, k, H)
        if self.mode == "mean":
            return last.mean(2)
        logits = torch.cat([s(h) for s, h in zip(self.scorers, layers[-self.k :], strict=True)],
                           dim=-1)  # (B, L, k)
        return (torch.softmax(logits, dim=-1).unsqueeze(-1) * last).sum(2)


class CNNSequenceEncoder(nn.Module):
    """Embeds a short id sequence per character and max-pools several convolutions over it.

    (B, L, S) ids -> (B, L, filters * len(kernels)).
    """

    def __init__(self, vocab_size: int, embedding_dim: int, filters: int, kernels: Sequence[int]):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, filters, k, padding=0) for k in kernels)
        self.kernels = tuple(kernels)
        self.output_size = filters * len(kernels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, length, s = ids.shape
        if s < max(self.kernels):
            ids = nn.functional.pad(ids, (0, max(self.kernels) - s))
        x = self.embedding(ids.reshape(b * length, -1)).transpose(1, 2)  # (BL, E, S)
        pooled = [torch.relu(conv(x)).amax(dim=-1) for conv in self.convs]
        return torch.cat(pooled, dim=-1).view(b, length, -1)


class PinyinGlyphFeatures(nn.Module):
    """Concatenates pinyin and/or glyph vectors to the features and projects back to width."""

    def __init__(self, width: int, pinyin: dict | None, glyph: dict | None,
                 pinyin_vocab_size: int = 0, glyph_vocab_size: int = 0):
        super().__init__()
        self.pinyin = CNNSequenceEncoder(pinyin_vocab_size, pinyin["embedding_dim"],
                                         pinyin["filters"], pinyin["kernels"]) if pinyin else None
        self.glyph = CNNSequenceEncoder(glyph_vocab_size, glyph["embedding_dim"],
                                        glyph["filters"], glyph["kernels"]) if glyph else None
        extra = sum(m.output_size for m in (self.pinyin, self.glyph) if m is not None)
        self.project = nn.Linear(width + extra, width)

    def vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.pinyin is not None:
            parts.append(self.pinyin(batch["pinyin_ids"]))
        if self.glyph is not None:
            parts.append(self.glyph(batch["glyph_ids"]))
        return torch.cat(parts, dim=-1)

    def forward(self, h: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([h, vectors], dim=-1))


class LexiconEmbedding(nn.Module):
    """Sum of the embeddings of a character's (type, B/I) lexicon feature ids (0 = none)."""

    def __init__(self, num_features: int, width: int):
        super().__init__()
        self.embedding = nn.Embedding(num_features, width, padding_idx=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids).sum(dim=2)


class WordSetEmbedding(nn.Module):
    """SoftLexicon: each of a character's B/M/E word sets becomes the frequency-weighted
    mean of its words' embeddings (zero when empty); the three are concatenated and
    projected to the encoder's width.

    A word's weight is log(1 + its dictionary frequency), a fixed buffer saved with the
    model (the paper weights by corpus counts; the log keeps a few very common words
    from drowning the rest).
    """

    def __init__(self, frequencies: list[int], dim: int, width: int, per_set: int):
        super().__init__()
        self.per_set = per_set
        self.embedding = nn.Embedding(len(frequencies) + 1, dim, padding_idx=0)
        weights = torch.log1p(torch.tensor([0.0] + [float(f) for f in frequencies]))
        self.register_buffer("weights", weights, persistent=False)
        self.project = nn.Linear(3 * dim, width, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L, 3 * per_set) -> (B, L, width)."""
        batch, length, _ = ids.shape
        ids = ids.view(batch, length, 3, self.per_set)
        w = self.weights[ids]  # 0 for padding
        vectors = self.embedding(ids)
        mean = (w[..., None] * vectors).sum(dim=3) / w.sum(dim=3, keepdim=True).clamp_min(1e-6)
        return self.project(mean.flatten(2))
