"""Soft targets from k teachers: their span probabilities averaged, kept sparse.

A teacher's score s of a cell (start, end, type) is a logit; at temperature T its
probability is sigmoid(s / T) (T > 1 softens, T < 1 sharpens). The student's target is the
mean over teachers, p = (1/k) sum_i sigmoid(s_i / T). Nearly every cell of a title is a
confident negative, so only cells with p >= ``min_probability`` are kept; every other cell
is a target of 0. A teacher that scores a cell below the floor T * logit(min_probability)
adds 0 to its mean rather than its tiny probability (each such term is below
``min_probability``): that is what keeps the prediction sparse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from jd_ner.modeling.decode import ScoredSpan

SoftCell = tuple[int, int, int, float]  # start, end inclusive, label index, probability


def score_floor(temperature: float, min_probability: float) -> float:
    """The lowest teacher score whose probability at ``temperature`` reaches ``min_probability``."""
    check_settings(temperature, min_probability)
    return temperature * math.log(min_probability / (1.0 - min_probability))


def check_settings(temperature: float, min_probability: float) -> None:
    if not temperature > 0:
        raise ValueError(f"distill.temperature must be positive, got {temperature}")
    if not 0.0 < min_probability < 1.0:
        raise ValueError(f"distill.min_probability must be in (0, 1), got {min_probability}")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def average_teachers(predictions: Sequence[Mapping[int, Sequence[ScoredSpan]]],
                     temperature: float, min_probability: float) -> dict[int, list[SoftCell]]:
    """Per title id, the cells whose averaged probability reaches ``min_probability``,
    sorted. ``predictions`` holds each teacher's scored cells (every cell it scores at or
    above :func:`score_floor`); a title any teacher saw gets an entry, possibly empty."""
    if not predictions:
        raise ValueError("distillation needs at least one teacher")
    check_settings(temperature, min_probability)
    k = len(predictions)
    sums: dict[int, dict[tuple[int, int, int], float]] = {}
    for teacher in predictions:
        for tid, spans in teacher.items():
            cells = sums.setdefault(int(tid), {})
            for start, end, label, score in spans:
                key = (int(start), int(end), int(label))
                cells[key] = cells.get(key, 0.0) + _sigmoid(float(score) / temperature)
    return {tid: [(s, e, t, total / k) for (s, e, t), total in sorted(cells.items())
                  if total / k >= min_probability]
            for tid, cells in sums.items()}


def window_cells(cells: Sequence[SoftCell], start: int, length: int) -> tuple[SoftCell, ...]:
    """The cells lying wholly in the window [start, start + length), window-relative (as a
    gold span is kept in every window that holds it whole)."""
    end = start + length
    return tuple((s - start, e - start, t, p) for s, e, t, p in cells if start <= s and e < end)
