"""A trained model + dev split -> entity metrics, per-type table, error analysis, plots."""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from jd_ner.encoding import (  # noqa: E402
    examples_from_frame,
    gold_entities,
    model_sequences,
    spans_cell,
    spans_of,
)
from jd_ner.evaluation import (  # noqa: E402
    flat_entities,
    metrics_report,
    per_type_table,
    raw_entities,
)
from jd_ner.modeling.model import NerModel  # noqa: E402
from jd_ner.modeling.predict import predict_spans  # noqa: E402
from jd_ner.modeling.training import resolve_device  # noqa: E402
from jd_ner.tracking import log_metrics  # noqa: E402

logger = logging.getLogger(__name__)


def check_compatible(model: NerModel, char_vocab: dict, label_schema: dict) -> None:
    """The model must read the features' ids and labels the way they were built."""
    if list(model.labels) != list(label_schema["labels"]):
        raise ValueError(
            "the model's label schema does not match the features' label_schema "
            f"({len(model.labels)} vs {len(label_schema['labels'])} types): re-run "
            "`kedro run --pipeline=train` on the current features, or re-run features on "
            "the data the model was trained on")
    if model.spec.char_vocab["tokens"] != char_vocab["tokens"]:
        raise ValueError(
            "the model's character vocabulary does not match the features' char_vocab: the "
            "ids would mean other characters. Re-train on the current features, or re-run "
            "features on the data the model was trained on")


def predict_dev(model: NerModel, dev_encoded: pd.DataFrame, char_vocab: dict,
                label_schema: dict, params: dict) -> pd.DataFrame:
    """Scored spans of every dev title (overlaps kept), one row per title."""
    check_compatible(model, char_vocab, label_schema)
    examples = examples_from_frame(dev_encoded, **model_sequences(model, dev_encoded))
    pred = predict_spans(model, examples, int(params["batch_size"]),
                         resolve_device(params["device"]), progress=True)
    rows = [{"title_id": tid,
             "spans": spans_cell([(s, e, model.labels[t]) for s, e, t, _ in spans]),
             "scores": [round(v, 4) for *_, v in spans]}
            for tid, spans in sorted(pred.items())]
    return pd.DataFrame(rows, columns=["title_id", "spans", "scores"])


def _as_scored(pred: pd.DataFrame, labels: list[str]):
    index = {name: i for i, name in enumerate(labels)}
    return {int(tid): [(s, e, index[t], float(v)) for (s, e, t), v in zip(spans_of(cell), scores,
                                                                          strict=True)]
            for tid, cell, scores in zip(pred["title_id"], pred["spans"], pred["scores"],
                                         strict=True)}


def score_predictions(dev_predictions: pd.DataFrame, dev_titles: pd.DataFrame,
                      label_schema: dict, decode: dict) -> tuple[dict, pd.DataFrame]:
    """Entity-level micro P/R/F1 on raw spans and after flat BIO decoding, error classes,
    and per-type metrics (flat)."""
    labels = list(label_schema["labels"])
    pred = _as_scored(dev_predictions, labels)
    gold = gold_entities(dev_titles)
    flat = flat_entities(pred, labels, decode["overlap"])
    report = metrics_report(raw_entities(pred, labels), flat, gold)
    log_metrics({f"eval_{k}": v for k, v in report.items()})
    logger.info("dev entity F1: flat %.4f, raw %.4f (P %.4f, R %.4f)", report["flat_f1"],
                report["raw_f1"], report["flat_precision"], report["flat_recall"])
    return report, per_type_table(flat, gold)


def plot_learning_curve(history: pd.DataFrame):
    """Training loss and dev F1 per epoch."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(history["epoch"], history["train_loss"], "o-", color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(history["epoch"], history["dev_f1"], "s-", color="tab:red", label="dev F1 (flat)")
    ax2.set_ylabel("dev entity F1", color="tab:red")
    ax2.set_ylim(0, 1)
    best = history.loc[history["dev_f1"].idxmax()]
    ax2.annotate(f"best {best['dev_f1']:.3f}", (best["epoch"], best["dev_f1"]),
                 textcoords="offset points", xytext=(0, 8), ha="center")
    ax.set_title("learning curve")
    fig.tight_layout()
    return fig


def plot_per_type_f1(per_type: pd.DataFrame):
    """F1 per entity type with its gold support, sorted by support."""
    table = per_type.sort_values("n_gold", ascending=True)
    fig, ax = plt.subplots(figsize=(7, max(3, 0.22 * len(table) + 1)))
    ax.barh([f"{t} ({n})" for t, n in zip(table["type"], table["n_gold"], strict=True)],
            table["f1"], color="tab:green")
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (flat); gold count in brackets")
    ax.set_title("dev F1 per entity type")
    fig.tight_layout()
    return fig
