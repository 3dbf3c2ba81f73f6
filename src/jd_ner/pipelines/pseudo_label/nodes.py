"""A trained model + unlabelled titles -> confidently labelled titles for self-training.

The model labels every unlabelled title that is not a train-split title (dev and test
titles of the split were already left out of the unlabelled titles); a title is kept
only if it has at least one entity and **every** entity it would be written with (after
decoding) scores at least ``min_score``. A training run with ``train.pseudo_labels``
on then learns from the gold titles plus these, at ``weight`` in the loss.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import pandas as pd

from jd_ner.encoder_files import texts_digest
from jd_ner.encoding import spans_cell, spans_of, titles_frame
from jd_ner.modeling.decode import decode_title
from jd_ner.modeling.model import NerModel
from jd_ner.pipelines.evaluate.nodes import predict_titles

logger = logging.getLogger(__name__)


def pseudo_label_titles(model: NerModel, unlabelled: pd.DataFrame, train: pd.DataFrame,
                        params: dict, evaluate: dict, decode: dict) -> tuple[pd.DataFrame, dict]:
    """The titles the model labels confidently, with those labels (a title table)."""
    if model.spec.trained_on != "train split":
        raise ValueError("pseudo-labels need a model trained on the train split (dev and test "
                         "held out); this one was trained on " + model.spec.trained_on)
    split = texts_digest(train["text"])
    if model.spec.train_split is None:
        logger.warning("the model does not record its train split (trained by an older jd_ner): "
                       "make sure it was trained on this one")
    elif model.spec.train_split != split:
        raise ValueError("the model was trained on another train split than this run's (another "
                         "train_file or split settings), so it may have learnt this split's dev or "
                         "test titles: pick one trained on this split with "
                         "--load-versions=ner_model:<version>")
    threshold = float(params["min_score"])
    candidates = unlabelled[~unlabelled["text"].isin(set(train["text"]))]
    limit = int(params["max_titles"] or 0)
    if 0 < limit < len(candidates):
        keep = sorted(random.Random(int(params["seed"])).sample(range(len(candidates)), limit))
        candidates = candidates.iloc[keep]
    candidates = candidates.reset_index(drop=True)
    pred = predict_titles(model, candidates, evaluate)
    rows, lowest, kept_scores = [], [], []
    index = {name: i for i, name in enumerate(model.labels)}
    for text, line, cell, scores in zip(candidates["text"], candidates["line"], pred["spans"],
                                        pred["scores"], strict=True):
        spans = [(s, e, index[t], float(v))
                 for (s, e, t), v in zip(spans_of(cell), scores, strict=True)]
        flat = decode_title(spans, text, decode)
        lowest.append(min((v for *_, v in flat), default=np.nan))
        if flat and min(v for *_, v in flat) >= threshold:
            rows.append({"title_id": len(rows), "text": text, "line": int(line),
                         "spans": spans_cell([(s, e, model.labels[t]) for s, e, t, _ in flat])})
            kept_scores += [v for *_, v in flat]
    # the split these were made for: a training run on another split refuses them
    frame = titles_frame(rows).assign(train_split=split)
    report = {"candidates": len(candidates), "kept": len(frame),
              "kept_share": len(frame) / max(1, len(candidates)), "min_score": threshold,
              "entities": int(sum(len(spans_of(c)) for c in frame["spans"])),
              "titles_without_entities": int(np.isnan(lowest).sum()),
              "lowest_entity_score_quartiles": np.nanquantile(lowest, [0.25, 0.5, 0.75]).tolist()
              if not np.isnan(lowest).all() else None}
    logger.info("pseudo-labels: kept %d of %d titles (every entity scored >= %.2f), %d entities",
                report["kept"], report["candidates"], threshold, report["entities"])
    return frame, report
