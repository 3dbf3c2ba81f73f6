"""From span scores to entities: thresholding, window merging, overlap resolution."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from jd_ner.modeling.heads import valid_cells

ScoredSpan = tuple[int, int, int, float]  # start, end (inclusive), label index, score
Window = tuple[int, int, int, list[ScoredSpan]]  # char_start, length, title length, spans
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

    A window cut inside the title cannot tell whether a span touching that cut ends there:
    the entity may go on in the next window. So each end of a span must be vouched for by
    some window that predicts the same span with that end away from its cuts; a span is
    kept when both ends are. An entity lying wholly in the overlap is vouched for at its
    start by the left window and at its end by the right one. Duplicates keep their
    highest score.
    """
    best: dict[tuple[int, int, int], float] = {}
    start_ok: set[tuple[int, int, int]] = set()
    end_ok: set[tuple[int, int, int]] = set()
    for char_start, length, title_length, spans in window_spans:
        cut_left = char_start > 0
        cut_right = char_start + length < title_length
        for start, end, label, score in spans:
            key = (start + char_start, end + char_start, label)
            if not (cut_left and start == 0):
                start_ok.add(key)
            if not (cut_right and end == length - 1):
                end_ok.add(key)
            if score > best.get(key, float("-inf")):
                best[key] = score
    return [(s, e, t, v) for (s, e, t), v in sorted(best.items())
            if (s, e, t) in start_ok and (s, e, t) in end_ok]


def spans_above(windows: Mapping[int, Sequence[Window]], threshold: float
                ) -> dict[int, list[ScoredSpan]]:
    """The titles' spans had they been predicted at ``threshold`` (at least the threshold
    ``windows`` were predicted at): windows are merged after the cut, as prediction does.
    Scores are float32 and :func:`spans_from_scores` compares them with the threshold
    rounded to float32, so the cut here is at that same value."""
    cut = torch.tensor(threshold, dtype=torch.float32).item()
    return {tid: merge_windows([(start, length, title_length,
                                 [span for span in spans if span[3] > cut])
                                for start, length, title_length, spans in w])
            for tid, w in windows.items()}


WHITESPACE = ("trim", "drop", "keep")


def clean_whitespace(spans: Sequence[ScoredSpan], text: str, mode: str = "trim") -> list[ScoredSpan]:
    """Spans whose first or last character is whitespace (gold spans never are).

    ``trim`` moves such edges inward to the nearest non-space character (a span of spaces
    only disappears; a trimmed span equal to another keeps the higher score), ``drop``
    removes them, ``keep`` returns the spans unchanged.
    """
    if mode not in WHITESPACE:
        raise ValueError(f"unknown decode.whitespace {mode!r}; known: {WHITESPACE}")
    if mode == "keep":
        return list(spans)
    best: dict[tuple[int, int, int], float] = {}
    for start, end, label, score in spans:
        if text[start].isspace() or text[end].isspace():
            if mode == "drop":
                continue
            while start <= end and text[start].isspace():
                start += 1
            while end >= start and text[end].isspace():
                end -= 1
            if start > end:
                continue
        key = (start, end, label)
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


def decode_title(spans: Sequence[ScoredSpan], text: str, decode: Mapping) -> list[ScoredSpan]:
    """A title's entities for flat output: whitespace edges handled, then overlaps resolved
    (``decode.whitespace``, ``decode.overlap``). Evaluation, training-time selection and
    submission all decode through this one function."""
    return resolve_overlaps(clean_whitespace(spans, text, decode["whitespace"]),
                            decode["overlap"])
