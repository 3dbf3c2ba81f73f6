"""Encoded examples, windows over long titles, length-bucketed batches and collation."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Example:
    """One window of one title, encoded. Span positions are window-relative characters."""

    title_id: int
    char_start: int  # where this window starts in its title
    title_length: int
    char_ids: tuple[int, ...]
    bigram_ids: tuple[int, ...] | None = None
    spans: tuple[tuple[int, int, int], ...] = ()  # (start, end inclusive, label index)
    # optional per-character id sequences (one fixed-length tuple per character)
    pinyin_ids: tuple[tuple[int, ...], ...] | None = None
    glyph_ids: tuple[tuple[int, ...], ...] | None = None
    lexicon_ids: tuple[tuple[int, ...], ...] | None = None
    word_ids: tuple[tuple[int, ...], ...] | None = None
    weight: float = 1.0  # of its span loss (pseudo-labelled titles: train.pseudo_weight)
    # a teacher's probabilities (start, end inclusive, label index, p): a distilled
    # student's soft targets; every cell not listed has p = 0
    soft: tuple[tuple[int, int, int, float], ...] | None = None

    def __len__(self) -> int:
        return len(self.char_ids)


def window_starts(length: int, max_chars: int, stride: int) -> list[int]:
    """Starts of overlapping windows covering ``length`` characters."""
    if not 0 < stride <= max_chars:
        raise ValueError(f"need 0 < window_stride <= max_chars, got {stride}, {max_chars}")
    starts = [0]
    while starts[-1] + max_chars < length:
        starts.append(starts[-1] + stride)
    return starts


def length_bucketed_batches(examples: Sequence[Example], batch_size: int,
                            rng: random.Random) -> list[list[int]]:
    """Index batches of similar lengths (less padding) in a seeded random order.

    Examples are shuffled, sorted by length within pools of 50 batches, cut into
    batches, and the batches shuffled: the order stays random but pads stay short.
    """
    order = list(range(len(examples)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p : p + pool], key=lambda i: len(examples[i]))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def sequential_batches(examples: Sequence[Example], batch_size: int) -> Iterator[list[int]]:
    """Length-sorted batches for prediction; the caller re-orders results by index."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


SEQUENCE_FIELDS = ("pinyin_ids", "glyph_ids", "lexicon_ids", "word_ids")


class Collator:
    """Pads a list of examples into tensors: [CLS] chars [SEP], token = char + 1.

    ``sequences`` names the per-character id-sequence fields the model reads; each becomes
    a (B, L, S) tensor with zeros at [CLS], [SEP] and padding.
    """

    def __init__(self, pad_id: int, cls_id: int, sep_id: int, num_labels: int,
                 with_bigrams: bool, sequences: tuple[str, ...] = ()):
        self.pad_id, self.cls_id, self.sep_id = pad_id, cls_id, sep_id
        self.num_labels, self.with_bigrams, self.sequences = num_labels, with_bigrams, sequences

    def __call__(self, examples: Sequence[Example], with_labels: bool = True) -> dict:
        size = len(examples)
        length = max(len(e) for e in examples) + 2
        input_ids = torch.full((size, length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((size, length), dtype=torch.long)
        char_mask = torch.zeros((size, length), dtype=torch.bool)
        bigram_ids = torch.zeros((size, length), dtype=torch.long) if self.with_bigrams else None
        extra = {}
        for name in self.sequences:
            width = len(getattr(examples[0], name)[0])
            extra[name] = torch.zeros((size, length, width), dtype=torch.long)
        labels = torch.zeros((size, self.num_labels, length, length), dtype=torch.bool) \
            if with_labels else None
        soft = has_soft = None
        if with_labels and any(ex.soft is not None for ex in examples):
            soft = torch.zeros((size, self.num_labels, length, length), dtype=torch.float)
            has_soft = torch.zeros(size, dtype=torch.float)
        for b, ex in enumerate(examples):
            n = len(ex)
            input_ids[b, 0], input_ids[b, n + 1] = self.cls_id, self.sep_id
            input_ids[b, 1 : n + 1] = torch.tensor(ex.char_ids, dtype=torch.long)
            attention[b, : n + 2] = 1
            char_mask[b, 1 : n + 1] = True
            if bigram_ids is not None:
                bigram_ids[b, 1 : n + 1] = torch.tensor(ex.bigram_ids, dtype=torch.long)
            for name, tensor in extra.items():
                tensor[b, 1 : n + 1] = torch.tensor(getattr(ex, name), dtype=torch.long)
            if labels is not None:
                for start, end, label in ex.spans:
                    labels[b, label, start + 1, end + 1] = True
            if soft is not None and ex.soft is not None:
                has_soft[b] = 1.0
                for start, end, label, p in ex.soft:
                    soft[b, label, start + 1, end + 1] = p
        batch = {"input_ids": input_ids, "attention_mask": attention, "char_mask": char_mask,
                 **extra}
        if with_labels and any(ex.weight != 1.0 for ex in examples):
            batch["weight"] = torch.tensor([ex.weight for ex in examples], dtype=torch.float)
        if bigram_ids is not None:
            batch["bigram_ids"] = bigram_ids
        if labels is not None:
            batch["labels"] = labels
        if soft is not None:
            batch["soft_targets"], batch["has_soft_targets"] = soft, has_soft
        return batch


def move(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
