"""Predicted spans -> entity sets, scores with bootstrap intervals, and per-type tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from jd_ner.metrics import ERROR_CLASSES, Entity, error_classes, micro_prf, per_type_prf
from jd_ner.modeling.decode import ScoredSpan, decode_title, spans_above


def raw_entities(pred: Mapping[int, Sequence[ScoredSpan]], labels: Sequence[str]) -> set[Entity]:
    """Every span above threshold, overlaps included (the model's raw output)."""
    return {(tid, s, e, labels[t]) for tid, spans in pred.items() for s, e, t, _ in spans}


def flat_entities(pred: Mapping[int, Sequence[ScoredSpan]], texts: Mapping[int, str],
                  labels: Sequence[str], decode: Mapping) -> set[Entity]:
    """Entities after decoding (whitespace edges, overlaps): what flat BIO output, and the
    competition, sees."""
    return {(tid, s, e, labels[t]) for tid, spans in pred.items()
            for s, e, t, _ in decode_title(spans, texts[tid], decode)}


def metrics_report(pred_raw: set[Entity], pred_flat: set[Entity], gold: set[Entity]) -> dict:
    raw, flat = micro_prf(pred_raw, gold), micro_prf(pred_flat, gold)
    return {
        **flat.as_dict("flat_"), **raw.as_dict("raw_"),
        "n_gold": flat.n_gold, "n_pred_flat": flat.n_pred, "n_pred_raw": raw.n_pred,
        **{f"errors_{k}": v for k, v in error_classes(pred_flat, gold).items()},
    }


def per_title_counts(pred: set[Entity], gold: set[Entity], title_ids: Sequence[int]) -> np.ndarray:
    """(n_titles, 3) array of true positives, predictions and gold entities per title."""
    row = {int(tid): i for i, tid in enumerate(title_ids)}
    counts = np.zeros((len(row), 3), dtype=np.int64)
    for e in pred & gold:
        counts[row[e[0]], 0] += 1
    for e in pred:
        counts[row[e[0]], 1] += 1
    for e in gold:
        counts[row[e[0]], 2] += 1
    return counts


def bootstrap_interval(counts: np.ndarray, samples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of micro P, R and F1, resampling titles.

    Draw ``samples`` resamples of the titles with replacement (``rng.integers(0, n, (samples,
    n))`` of ``numpy.random.default_rng(seed)``), recompute micro P/R/F1 from the summed
    per-title counts, and take the (1 - level)/2 and (1 + level)/2 quantiles. Titles are the
    unit because a title's entities are not independent of each other.
    """
    n = len(counts)
    if n == 0:
        return {k: (float("nan"), float("nan")) for k in ("precision", "recall", "f1")}
    index = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    tp, n_pred, n_gold = (counts[:, k][index].sum(axis=1).astype(float) for k in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = {"precision": np.where(n_pred > 0, tp / n_pred, 0.0),
                 "recall": np.where(n_gold > 0, tp / n_gold, 0.0),
                 "f1": np.where(n_pred + n_gold > 0, 2 * tp / (n_pred + n_gold), 0.0)}
    lo, hi = (1 - level) / 2, (1 + level) / 2
    return {k: (float(np.quantile(v, lo)), float(np.quantile(v, hi))) for k, v in stats.items()}


def per_type_table(pred: set[Entity], gold: set[Entity]) -> pd.DataFrame:
    rows = [{"type": t, "precision": m.precision, "recall": m.recall, "f1": m.f1,
             "n_gold": m.n_gold, "n_pred": m.n_pred, "tp": m.tp}
            for t, m in per_type_prf(pred, gold).items()]
    return pd.DataFrame(rows, columns=["type", "precision", "recall", "f1", "n_gold", "n_pred", "tp"])


def flat_scored_entities(pred: Mapping[int, Sequence[ScoredSpan]], texts: Mapping[int, str],
                         labels: Sequence[str], decode: Mapping) -> dict[Entity, float]:
    """``flat_entities`` with the score each entity was predicted with."""
    return {(tid, s, e, labels[t]): float(v) for tid, spans in pred.items()
            for s, e, t, v in decode_title(spans, texts[tid], decode)}


ClassifiedEntity = tuple[str, Entity | None, Entity | None]  # error class, gold, prediction


def classify_entities(pred: set[Entity], gold: set[Entity]) -> list[ClassifiedEntity]:
    """Each prediction with its error class and the gold entity it is judged against (None
    for a spurious one), then each missed gold entity with no prediction, in title order.

    The class of an entity is whatever ``metrics.error_classes`` counts for that entity
    alone, so these rows add up to its counts exactly and the two cannot drift apart. The
    gold partner is the overlapping entity that decided the class: the one with the same
    span (wrong_type), of the same type (wrong_boundary), or any (wrong_both); among
    several, the one sharing most characters, then the leftmost.
    """
    gold_by_title: dict[int, set[Entity]] = {}
    pred_by_title: dict[int, set[Entity]] = {}
    for g in gold:
        gold_by_title.setdefault(g[0], set()).add(g)
    for p in pred:
        pred_by_title.setdefault(p[0], set()).add(p)
    rows: list[ClassifiedEntity] = []
    for tid in sorted(gold_by_title.keys() | pred_by_title.keys()):
        golds, preds = gold_by_title.get(tid, set()), pred_by_title.get(tid, set())
        for p in preds:
            counts = error_classes({p}, golds)
            kind = next(c for c in ERROR_CLASSES if c != "missed" and counts[c])
            rows.append((kind, _gold_partner(kind, p, golds), p))
        rows += [("missed", g, None) for g in golds if error_classes(preds, {g})["missed"]]
    return sorted(rows, key=_position)


def _position(row: ClassifiedEntity) -> tuple:
    kind, g, p = row
    anchor = g or p
    return (anchor[0], anchor[1], anchor[2], *(p[1:3] if p else (-1, -1)), kind)


def _gold_partner(kind: str, p: Entity, golds: set[Entity]) -> Entity | None:
    if kind == "exact":
        return p
    shared = {g: min(g[2], p[2]) - max(g[1], p[1]) + 1 for g in golds}
    candidates = [g for g, n in shared.items() if n > 0 and (
        kind == "wrong_both" or (kind == "wrong_type" and g[1:3] == p[1:3])
        or (kind == "wrong_boundary" and g[3] == p[3]))]
    return min(candidates, key=lambda g: (-shared[g], g[1], g[2], g[3]), default=None)


def choose_threshold(windows: Mapping[int, Sequence], texts: Mapping[int, str],
                     labels: Sequence[str], gold: set[Entity], decode: Mapping,
                     candidates: Sequence[float]) -> tuple[float, dict[float, float]]:
    """The candidate threshold with the best flat entity F1 on these titles (ties: the one
    nearest 0), and each candidate's F1. ``windows``: the titles' windows predicted at the
    lowest candidate (``jd_ner.modeling.predict.predict_window_spans``); each candidate
    keeps the cells above it and merges windows, as predicting at it would. Ties between t
    and -t go to the lower."""
    f1 = {t: micro_prf(flat_entities(spans_above(windows, t), texts, labels, decode), gold).f1
          for t in candidates}
    return max(candidates, key=lambda t: (f1[t], -abs(t))), f1
