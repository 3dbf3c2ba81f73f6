"""From span scores to entities: thresholding, window merging, overlap resolution."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from jd_ner.modeling.heads import valid_cells

ScoredSpan = tuple[int, int, int, float]  # start, end (inclusive), label index, score
RESOLUTIONS = ("greedy_score", "longest_first", "first_come")


def spans_from_scores(scores: torch.Tensor, char_mask: torch.Tensor,
                      threshold: float = 0.0) -> list[list[ScoredSpan]]:
    """Cells with score > threshold, per sample, in character (not token) positions."""
    hits = (scores > threshold) & valid_cells(char_mask)
    out: list[list[ScoredSpan]] = [[] for _ in range(scores.shape[0])]
    idx = hits.nonzero().tolist()
    if idx:
        values = scores[hits].float().tolist()
        for (b, t, i, j), value in zip(idx, values, strict=True):
            out[b].append((i - 1, j - 1, t, value))  # token i is character i - 1
    return out


def merge_windows(window_spans: Iterable[tuple[int, int, int, list[ScoredSpan]]]) -> list[ScoredSpan]:
    """Spans of one title from its windows ``(char_start, window_length, title_length, spans)``.

    A span touching a window edge that is not the title's edge may be cut short, so it is
    dropped; the overlapping neighbour window sees the entity whole. Duplicates keep
    their highest score.
    """
    best: dict[tuple[int, int, int], float] = {}
    for char_start, length, title_length, spans in window_spans:
        cut_left = char_start > 0
        cut_right = char_start + length < title_length
        for start, end, label, score in spans:
            if (cut_left and start == 0) or (cut_right and end == length - 1):
                continue
            key = (start + char_start, end + char_start, label)
            if score > best.get(key, float("-inf")):
                best[key] = score
    return [(s, e, t, v) for (s, e, t), v in sorted(best.items())]


def resolve_overlaps(spans: Sequence[ScoredSpan], strategy: str = "greedy_score") -> list[ScoredSpan]:
    """Non-overlapping subset for flat BIO output.

    ``greedy_score``: highest score first; ``longest_first``: longest first (score breaks
    ties); ``first_come``: leftmost first (longest breaks ties). A span is kept when
    it overlaps none kept before it.
    """
    keys = {
        "greedy_score": lambda s: (-s[3], s[0], s[1]),
        "longest_first": lambda s: (-(s[1] - s[0]), -s[3], s[0]),
        "first_come": lambda s: (s[0], -(s[1] - s[0]), -s[3]),
    }
    if strategy not in keys:
        raise ValueError(f"unknown overlap resolution {strategy!r}; known: {RESOLUTIONS}")
    taken: set[int] = set()
    kept = []
    for span in sorted(spans, key=keys[strategy]):
        cells = range(span[0], span[1] + 1)
        if not any(c in taken for c in cells):
            kept.append(span)
            taken.update(cells)
    return sorted(kept)
