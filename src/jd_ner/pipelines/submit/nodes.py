"""A trained model + the contest's test titles -> a validated submission in the official layout."""

from __future__ import annotations

import logging

import pandas as pd

from jd_ner.encoding import spans_of
from jd_ner.modeling.decode import decode_title
from jd_ner.modeling.model import NerModel
from jd_ner.text.bio import format_submission, spans_to_tags, validate_submission

logger = logging.getLogger(__name__)


def write_submission(titles: pd.DataFrame, predictions: pd.DataFrame,
                     model: NerModel, decode: dict) -> str:
    """Decode each title (``decode.whitespace``, ``decode.overlap``), tag every character,
    validate, return the text.

    The validator checks the text against the input titles (same titles in order, every
    character echoed with exactly one BIO tag) before Kedro writes it.
    """
    if list(titles["title_id"]) != list(predictions["title_id"]):
        raise ValueError("predictions are not aligned with the titles to submit")
    texts, tags = [], []
    for text, cell, scores in zip(titles["text"], predictions["spans"], predictions["scores"],
                                  strict=True):
        scored = [(s, e, t, float(v)) for (s, e, t), v in zip(spans_of(cell), scores, strict=True)]
        kept = decode_title(scored, text, decode)
        texts.append(text)
        tags.append(spans_to_tags(len(text), [(s, e, t) for s, e, t, _ in kept]))
    content = format_submission(texts, tags)
    validate_submission(content, texts, model.labels)
    n_entities = sum(1 for row in tags for tag in row if tag.startswith("B-"))
    logger.info("submission: %d titles, %d characters, %d entities, validated",
                len(texts), sum(map(len, texts)), n_entities)
    if model.spec.trained_on != "train split":
        logger.warning("the submitted model was trained on %s: it is unevaluated",
                       model.spec.trained_on)
    return content
