"""A trained model + test titles -> a validated submission in the official layout."""

from __future__ import annotations

import logging

import pandas as pd

from jd_ner.encoding import examples_for_model, spans_cell, spans_of
from jd_ner.modeling.decode import resolve_overlaps
from jd_ner.modeling.model import NerModel
from jd_ner.modeling.predict import predict_spans
from jd_ner.modeling.training import resolve_device
from jd_ner.text.bio import format_submission, spans_to_tags, validate_submission

logger = logging.getLogger(__name__)


def predict_test(model: NerModel, test_titles: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Scored spans for every test title, encoded with the model's own vocabulary and
    windows (titles longer than the model's window are predicted in overlapping windows)."""
    pred = predict_spans(model, examples_for_model(model, test_titles), int(params["batch_size"]),
                         resolve_device(params["device"]), progress=True)
    rows = [{"title_id": int(tid),
             "spans": spans_cell([(s, e, model.labels[t]) for s, e, t, _ in pred.get(int(tid), [])]),
             "scores": [round(v, 4) for *_, v in pred.get(int(tid), [])]}
            for tid in test_titles["title_id"]]
    return pd.DataFrame(rows, columns=["title_id", "spans", "scores"])


def write_submission(test_titles: pd.DataFrame, test_predictions: pd.DataFrame,
                     model: NerModel, decode: dict) -> str:
    """Resolve overlaps (``decode.overlap``), tag every character, validate, return the text.

    The validator checks the text against the input titles (same titles in order, every
    character echoed with exactly one BIO tag) before Kedro writes it.
    """
    if list(test_titles["title_id"]) != list(test_predictions["title_id"]):
        raise ValueError("test predictions are not aligned with the test titles")
    texts, tags = [], []
    for text, cell, scores in zip(test_titles["text"], test_predictions["spans"],
                                  test_predictions["scores"], strict=True):
        scored = [(s, e, t, float(v)) for (s, e, t), v in zip(spans_of(cell), scores, strict=True)]
        kept = resolve_overlaps(scored, decode["overlap"])
        texts.append(text)
        tags.append(spans_to_tags(len(text), [(s, e, t) for s, e, t, _ in kept]))
    content = format_submission(texts, tags)
    validate_submission(content, texts, model.labels)
    n_entities = sum(1 for row in tags for tag in row if tag.startswith("B-"))
    logger.info("submission: %d titles, %d characters, %d entities, validated",
                len(texts), sum(map(len, texts)), n_entities)
    return content

