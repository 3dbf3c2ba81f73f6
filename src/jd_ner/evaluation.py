"""Predicted spans -> entity sets, tables and plots for evaluation and submission."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from jd_ner.metrics import Entity, error_classes, micro_prf, per_type_prf
from jd_ner.modeling.decode import ScoredSpan, resolve_overlaps


def raw_entities(pred: Mapping[int, Sequence[ScoredSpan]], labels: Sequence[str]) -> set[Entity]:
    """Every span above threshold, overlaps included."""
    return {(tid, s, e, labels[t]) for tid, spans in pred.items() for s, e, t, _ in spans}


def flat_entities(pred: Mapping[int, Sequence[ScoredSpan]], labels: Sequence[str],
                  overlap: str) -> set[Entity]:
    """Entities after overlap resolution: what flat BIO output (and the competition) sees."""
    return {(tid, s, e, labels[t]) for tid, spans in pred.items()
            for s, e, t, _ in resolve_overlaps(spans, overlap)}


def metrics_report(pred_raw: set[Entity], pred_flat: set[Entity], gold: set[Entity]) -> dict:
    raw, flat = micro_prf(pred_raw, gold), micro_prf(pred_flat, gold)
    return {
        **flat.as_dict("flat_"), **raw.as_dict("raw_"),
        "n_gold": flat.n_gold, "n_pred_flat": flat.n_pred, "n_pred_raw": raw.n_pred,
        **{f"errors_{k}": v for k, v in error_classes(pred_flat, gold).items()},
    }


def per_type_table(pred: set[Entity], gold: set[Entity]) -> pd.DataFrame:
    rows = [{"type": t, "precision": m.precision, "recall": m.recall, "f1": m.f1,
             "n_gold": m.n_gold, "n_pred": m.n_pred, "tp": m.tp}
            for t, m in per_type_prf(pred, gold).items()]
    return pd.DataFrame(rows, columns=["type", "precision", "recall", "f1", "n_gold", "n_pred", "tp"])
