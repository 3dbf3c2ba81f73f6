"""A trained model + the held-out splits -> entity metrics with intervals, per-type tables, plots.

The **test** split is the headline: nothing was selected on it. The dev split picked the
model's epoch, so its score is optimistic and is reported alongside, labelled as such.
"""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from jd_ner.encoding import examples_for_model, gold_entities, spans_cell, spans_of  # noqa: E402
from jd_ner.evaluation import (  # noqa: E402
    bootstrap_interval,
    flat_entities,
    metrics_report,
    per_title_counts,
    per_type_table,
    raw_entities,
)
from jd_ner.modeling.model import NerModel  # noqa: E402
from jd_ner.modeling.predict import predict_spans  # noqa: E402
from jd_ner.modeling.training import resolve_device  # noqa: E402
from jd_ner.tracking import log_metrics  # noqa: E402

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["title_id", "spans", "scores"]


def predict_titles(model: NerModel, titles: pd.DataFrame, params: dict,
                   progress: bool = True) -> pd.DataFrame:
    """Scored spans of every title (overlaps kept, scores unrounded), one row per title.

    Titles are encoded with the model's own vocabularies, windows and feature settings
    (as ``submit`` does), so a model reads them exactly as it was trained to, whatever
    the features pipeline's current settings are.
    """
    if titles.empty:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    pred = predict_spans(model, examples_for_model(model, titles), int(params["batch_size"]),
                         resolve_device(params["device"]), progress=progress,
                         amp=bool(params["amp"]))
    rows = [{"title_id": int(tid),
             "spans": spans_cell([(s, e, model.labels[t]) for s, e, t, _ in pred.get(int(tid), [])]),
             "scores": [float(v) for *_, v in pred.get(int(tid), [])]}
            for tid in titles["title_id"]]
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


def decoded_entities(predictions: pd.DataFrame, titles: pd.DataFrame, decode: dict
                     ) -> tuple[set, set, set]:
    """(flat, raw, gold) entity sets of a split: flat after decoding (whitespace edges,
    overlaps), raw as predicted, gold from the title table."""
    if list(predictions["title_id"]) != list(titles["title_id"]):
        raise ValueError("predictions are not aligned with the titles they should score: re-run "
                         "the evaluate pipeline")
    names = sorted({t for cell in predictions["spans"] for _, _, t in spans_of(cell)})
    index = {name: i for i, name in enumerate(names)}
    pred = {int(tid): [(s, e, index[t], float(v))
                       for (s, e, t), v in zip(spans_of(cell), scores, strict=True)]
            for tid, cell, scores in zip(predictions["title_id"], predictions["spans"],
                                         predictions["scores"], strict=True)}
    texts = dict(zip(titles["title_id"].astype(int), titles["text"], strict=True))
    return flat_entities(pred, texts, names, decode), raw_entities(pred, names), gold_entities(titles)


def score_titles(predictions: pd.DataFrame, titles: pd.DataFrame, decode: dict,
                 params: dict) -> tuple[dict, pd.DataFrame]:
    """Entity-level micro P/R/F1 (flat, after decoding, and raw) with 95% bootstrap
    intervals over titles, error classes, and per-type P/R/F1 (flat)."""
    if titles.empty:
        return {"evaluated": False, "titles": 0,
                "reason": "no titles in this split (final_fit trains on every labelled title)"}, \
            per_type_table(set(), set())
    flat, raw, gold = decoded_entities(predictions, titles, decode)
    report = {"evaluated": True, "titles": len(titles), **metrics_report(raw, flat, gold)}
    samples, seed = int(params["bootstrap_samples"]), int(params["bootstrap_seed"])
    interval = bootstrap_interval(per_title_counts(flat, gold, titles["title_id"]), samples, seed)
    report["interval_95"] = {k: list(v) for k, v in interval.items()}
    report["bootstrap"] = {"samples": samples, "seed": seed, "unit": "title"}
    return report, per_type_table(flat, gold)


def summarise_evaluation(test_metrics: dict, dev_metrics: dict, model: NerModel) -> dict:
    """The run's headline: test P/R/F1 with its interval, dev (the selection split) beside it.

    Logged to MLflow as ``test_f1`` (with ``test_f1_low``/``test_f1_high``), ``test_precision``,
    ``test_recall`` and ``selection_dev_f1``.
    """
    summary = {"model_trained_on": model.spec.trained_on, "test": _headline(test_metrics),
               "dev": _headline(dev_metrics),
               "dev_note": "dev selected the model's epoch, so its score is optimistic; "
                           "quote test"}
    if not test_metrics["evaluated"]:
        summary["note"] = ("UNEVALUATED: the model was trained on every labelled title "
                           "(final_fit), so no held-out title is left to score it on")
        logger.warning("evaluate: %s", summary["note"])
        return summary
    t = summary["test"]
    log_metrics({"test_f1": t["f1"], "test_f1_low": t["f1_95"][0], "test_f1_high": t["f1_95"][1],
                 "test_precision": t["precision"], "test_recall": t["recall"]})
    if dev_metrics["evaluated"]:
        log_metrics({"selection_dev_f1": dev_metrics["flat_f1"]})
    logger.info("test entity F1 %.4f (95%% interval %.4f-%.4f; P %.4f, R %.4f) on %d titles; "
                "dev F1 %.4f (the split that selected the epoch)", t["f1"], *t["f1_95"],
                t["precision"], t["recall"], test_metrics["titles"],
                dev_metrics.get("flat_f1", float("nan")))
    return summary


def _headline(metrics: dict) -> dict:
    if not metrics["evaluated"]:
        return {"evaluated": False}
    ci = metrics["interval_95"]
    return {"titles": metrics["titles"], "f1": metrics["flat_f1"], "f1_95": ci["f1"],
            "precision": metrics["flat_precision"], "precision_95": ci["precision"],
            "recall": metrics["flat_recall"], "recall_95": ci["recall"],
            "raw_f1": metrics["raw_f1"]}


def plot_learning_curve(history: pd.DataFrame):
    """Training loss and dev F1 per epoch."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(history["epoch"], history["train_loss"], "o-", color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    if "dev_f1" in history:
        ax2 = ax.twinx()
        ax2.plot(history["epoch"], history["dev_f1"], "s-", color="tab:red", label="dev F1 (flat)")
        ax2.set_ylabel("dev entity F1", color="tab:red")
        ax2.set_ylim(0, 1)
        best = history.loc[history["dev_f1"].idxmax()]
        ax2.annotate(f"best {best['dev_f1']:.3f}", (best["epoch"], best["dev_f1"]),
                     textcoords="offset points", xytext=(0, 8), ha="center")
    ax.set_title("learning curve" if "dev_f1" in history else "learning curve (final fit: no dev)")
    fig.tight_layout()
    return fig


def plot_per_type_f1(per_type: pd.DataFrame):
    """Test F1 per entity type with its gold support, sorted by support."""
    table = per_type.sort_values("n_gold", ascending=True)
    fig, ax = plt.subplots(figsize=(7, max(3, 0.22 * len(table) + 1)))
    ax.barh([f"{t} ({n})" for t, n in zip(table["type"], table["n_gold"], strict=True)],
            table["f1"], color="tab:green")
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (flat); gold count in brackets")
    ax.set_title("test F1 per entity type")
    fig.tight_layout()
    return fig
