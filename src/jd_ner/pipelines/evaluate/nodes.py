"""A trained model + the held-out splits -> entity metrics with intervals, per-type tables, plots.

The **test** split is the headline: nothing was selected on it. The dev split picked the
model's epoch, so its score is optimistic and is reported alongside, labelled as such.
"""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from jd_ner.encoding import examples_for_model, gold_entities, spans_cell, spans_of  # noqa: E402
from jd_ner.evaluation import (  # noqa: E402
    bootstrap_interval,
    classify_entities,
    flat_entities,
    flat_scored_entities,
    metrics_report,
    per_title_counts,
    per_type_table,
    raw_entities,
)
from jd_ner.metrics import ERROR_CLASSES, type_sort_key  # noqa: E402
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


def _scored_predictions(predictions: pd.DataFrame, titles: pd.DataFrame
                        ) -> tuple[dict, list[str], dict[int, str]]:
    """Predicted spans per title as scored label indices, the label names, the title texts."""
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
    return pred, names, texts


def decoded_entities(predictions: pd.DataFrame, titles: pd.DataFrame, decode: dict
                     ) -> tuple[set, set, set]:
    """(flat, raw, gold) entity sets of a split: flat after decoding (whitespace edges,
    overlaps), raw as predicted, gold from the title table."""
    pred, names, texts = _scored_predictions(predictions, titles)
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
    summary = {"model_trained_on": model.spec.trained_on,
               "decode_threshold": model.spec.threshold, "test": _headline(test_metrics),
               "dev": _headline(dev_metrics),
               "dev_note": "dev selected the model's epoch and decision threshold, so its "
                           "score is optimistic; quote test"}
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


PAIR_COLUMNS = ["title_id", "error_class", "gold_start", "gold_end", "gold_type", "pred_start",
                "pred_end", "pred_type", "pred_score"]
ERROR_COLUMNS = ["split", "title_id", "title", "error_class", "gold_start", "gold_end",
                 "gold_type", "gold_text", "pred_start", "pred_end", "pred_type", "pred_text",
                 "pred_score"]
NONE, OTHER = "none", "other"
_PAIR_DTYPES = {"title_id": "int64", "error_class": "object", "gold_start": "Int64",
                "gold_end": "Int64", "gold_type": "object", "pred_start": "Int64",
                "pred_end": "Int64", "pred_type": "object", "pred_score": "float64"}


def pair_entities(predictions: pd.DataFrame, titles: pd.DataFrame, decode: dict) -> pd.DataFrame:
    """Every flat (decoded) prediction of a split with its error class and the gold entity
    it is judged against, and every missed gold entity: one row each, as
    ``evaluation.classify_entities`` pairs them (the classes ``{split}_metrics`` counts)."""
    if titles.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS).astype(_PAIR_DTYPES)
    pred, names, texts = _scored_predictions(predictions, titles)
    scored = flat_scored_entities(pred, texts, names, decode)
    rows = [{"title_id": (g or p)[0], "error_class": kind,
             **dict(zip(PAIR_COLUMNS[2:5], g[1:] if g else (None,) * 3, strict=True)),
             **dict(zip(PAIR_COLUMNS[5:8], p[1:] if p else (None,) * 3, strict=True)),
             "pred_score": scored[p] if p else None}
            for kind, g, p in classify_entities(set(scored), gold_entities(titles))]
    return pd.DataFrame(rows, columns=PAIR_COLUMNS).astype(_PAIR_DTYPES)


def tabulate_errors(dev_pairs: pd.DataFrame, dev_titles: pd.DataFrame, test_pairs: pd.DataFrame,
                    test_titles: pd.DataFrame) -> pd.DataFrame:
    """Every error of dev and test (all classes but exact), one row each, with the title
    and the text of both spans, to read or filter (e.g. ``error_class == 'wrong_type'``)."""
    frames = []
    for split, pairs, titles in (("dev", dev_pairs, dev_titles), ("test", test_pairs, test_titles)):
        errors = pairs[pairs["error_class"] != "exact"]
        text = dict(zip(titles["title_id"].astype(int), titles["text"], strict=True))
        frames.append(errors.assign(
            split=split, title=[text[int(t)] for t in errors["title_id"]],
            gold_text=_span_texts(errors, "gold", text), pred_text=_span_texts(errors, "pred", text)))
    return pd.concat(frames, ignore_index=True)[ERROR_COLUMNS]


def _span_texts(rows: pd.DataFrame, side: str, text: dict[int, str]) -> list[str | None]:
    return [None if pd.isna(s) else text[int(t)][int(s):int(e) + 1]
            for t, s, e in zip(rows["title_id"], rows[f"{side}_start"], rows[f"{side}_end"],
                               strict=True)]


def _by_support(per_type: pd.DataFrame) -> pd.DataFrame:
    """Per-type rows, most gold entities first, then in type order; type names as text
    (a per-type CSV read back has numeric type names as numbers)."""
    table = per_type.assign(type=per_type["type"].astype(str))
    order = sorted(range(len(table)), key=lambda i: (-table["n_gold"].iloc[i],
                                                      type_sort_key(table["type"].iloc[i])))
    return table.iloc[order]


def confusion_counts(pairs: pd.DataFrame, per_type: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Gold type (rows) x predicted type (columns) counts of a split's entity pairs.

    Every prediction is counted once, in the row of the gold entity it overlaps (row
    ``none``: spurious), and every missed gold entity once, in column ``none``; so column
    totals are the predictions per type, and the diagonal holds exact matches and
    same-type boundary errors. The ``top_n`` types with most gold entities (``per_type``'s
    ``n_gold``) get their own row and column; the rest are pooled as ``other``.
    """
    types = list(_by_support(per_type)["type"].head(top_n))
    kept = set(types)
    seen = set(pairs["gold_type"].dropna()) | set(pairs["pred_type"].dropna())
    labels = types + ([OTHER] if seen - kept else []) + [NONE]

    def label(value) -> str:
        return NONE if pd.isna(value) else value if value in kept else OTHER

    matrix = pd.DataFrame(0, index=pd.Index(labels, name="gold"),
                          columns=pd.Index(labels, name="predicted"))
    for gold_type, pred_type in zip(pairs["gold_type"], pairs["pred_type"], strict=True):
        matrix.loc[label(gold_type), label(pred_type)] += 1
    return matrix


CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "AR PL UMing CN", "SimHei", "Microsoft YaHei", "PingFang SC")


def _cjk_fonts() -> list[str]:
    """Font families for text that may hold Chinese (type names): an installed CJK font
    first when there is one (matplotlib falls back per glyph), DejaVu Sans otherwise."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return [f for f in CJK_FONTS if f in installed] + ["DejaVu Sans"]


def plot_model_learning_curve(model: NerModel, history: pd.DataFrame, training_config: dict):
    """The evaluated model's own learning curve, from the training record it carries, with
    its version in the title; a model saved before it carried one falls back on the newest
    ``training_history`` and ``training_config`` (which may belong to another run)."""
    record = model.spec.training
    version = getattr(model, "version", None)
    if record:
        history = pd.DataFrame(record["history"])
        training_config = {"trick": record["trick"], "optim": {"seed": record["seed"]}}
        if record.get("averaged_epochs"):  # SWA: the saved model is no single epoch
            first, last = record["averaged_epochs"]
            f1 = (record.get("averaged_metrics") or {}).get("dev_f1", float("nan"))
            version = f"{version or ''} (saved: SWA of epochs {first}-{last}, dev F1 {f1:.3f})"
        if record.get("ensemble"):  # one curve per member; the first stands for them
            members = record["ensemble"]["members"]
            f1 = record["ensemble"].get("dev_f1", float("nan"))
            version = (f"{version or ''} (saved: ensemble of {len(members)}, dev F1 {f1:.3f}; "
                       f"the curve of member 1)")
    return plot_learning_curve(history, training_config, version)


def plot_learning_curve(history: pd.DataFrame, training_config: dict,
                        version: str | None = None):
    """Training loss (top) and dev P, R and F1 (bottom) per epoch, the selected epoch
    marked on both; the trick, seed and selected epoch in the title.

    The selected epoch is the first with the highest dev F1, as training keeps it; a final
    fit has no dev, and keeps its last epoch.
    """
    has_dev = "dev_f1" in history and history["dev_f1"].notna().any()
    best = history.loc[history["dev_f1"].idxmax()] if has_dev else history.iloc[-1]
    fig, (loss_ax, dev_ax) = plt.subplots(2, 1, sharex=True, figsize=(8.5, 6),
                                          layout="constrained")
    loss_ax.plot(history["epoch"], history["train_loss"], "o-", color="tab:blue",
                 label="train loss")
    loss_ax.set_ylabel("train loss")
    if has_dev:
        for column, colour, style in (("dev_precision", "tab:orange", "^--"),
                                      ("dev_recall", "tab:purple", "v--"),
                                      ("dev_f1", "tab:red", "s-")):
            if column in history:
                dev_ax.plot(history["epoch"], history[column], style, color=colour,
                            label=column.replace("dev_", "dev ").replace("f1", "F1 (flat)"),
                            linewidth=2.2 if column == "dev_f1" else 1.2)
        dev_ax.plot([best["epoch"]], [best["dev_f1"]], "*", color="black", markersize=14,
                    label=f"selected: epoch {int(best['epoch'])}, F1 {best['dev_f1']:.3f}")
        scores = history[[c for c in ("dev_precision", "dev_recall", "dev_f1") if c in history]]
        dev_ax.set_ylim(max(0.0, scores.min().min() - 0.05), min(1.0, scores.max().max() + 0.05))
        dev_ax.set_ylabel("dev entity score")
    else:
        dev_ax.text(0.5, 0.5, "final fit: no dev split, the last epoch is kept",
                    ha="center", va="center", transform=dev_ax.transAxes)
        dev_ax.set_yticks([])
    for ax in (loss_ax, dev_ax):
        ax.axvline(best["epoch"], color="grey", linestyle=":", label="selected epoch"
                   if ax is loss_ax else None)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    dev_ax.set_xlabel("epoch")
    dev_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    seed = (training_config.get("optim") or {}).get("seed")
    fig.suptitle((f"model {version}\n" if version else "")
                 + f"learning curve: trick {training_config.get('trick', '?')}"
                 + (f", seed {seed}" if seed is not None else "")
                 + f"; {'selected' if has_dev else 'kept'} epoch {int(best['epoch'])} "
                 f"of {len(history)}")
    return fig


def plot_per_type(per_type: pd.DataFrame, metrics: dict, top_n: int):
    """Test P, R and F1 per entity type, grouped horizontal bars, for the ``top_n`` types
    with most gold entities (most at the top); gold count in the labels, F1 printed on its
    bar, and the micro F1 over all types as a vertical line."""
    table = _by_support(per_type).head(top_n).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8.5, max(3.0, 0.5 * len(table) + 1.6)), layout="constrained")
    if table.empty:
        ax.text(0.5, 0.5, "no test titles to score (final fit)", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    rows = np.arange(len(table))
    height = 0.27
    for offset, column, colour in ((-height, "recall", "tab:purple"),
                                   (0.0, "precision", "tab:orange"),
                                   (height, "f1", "tab:green")):
        bars = ax.barh(rows + offset, table[column], height, color=colour,
                       label="F1" if column == "f1" else column)
        if column == "f1":
            ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=7, fontweight="bold",
                         bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3,
                               "alpha": 0.8})  # legible where the micro-F1 line crosses
    ax.set_yticks(rows, [f"{t} (n={n})" for t, n in zip(table["type"], table["n_gold"],
                                                         strict=True)],
                  fontfamily=_cjk_fonts(), fontsize=8)
    if metrics.get("evaluated"):
        ax.axvline(metrics["flat_f1"], color="black", linestyle="--", linewidth=1,
                   label=f"micro F1, all types: {metrics['flat_f1']:.3f}")
    ax.set_xlim(0, 1.1)
    ax.set_ylim(-0.6, len(table) - 0.4)
    ax.set_xlabel("test entity score (flat); n = gold entities of the type")
    handles, names = ax.get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda i: ["F1", "precision", "recall"].index(names[i])
                   if names[i] in ("F1", "precision", "recall") else 3)  # as the bars stack
    ax.legend([handles[i] for i in order], [names[i] for i in order], loc="upper left",
              bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title(f"test P / R / F1 per entity type: {len(table)} of {len(per_type)} types, "
                 "most gold entities first")
    return fig


ERROR_LABELS = {"exact": "exact", "wrong_type": "wrong\ntype", "wrong_boundary": "wrong\nboundary",
                "wrong_both": "both\nwrong", "spurious": "spurious", "missed": "missed"}


def plot_error_classes(dev_metrics: dict, test_metrics: dict):
    """Counts of each error class (as ``{split}_metrics`` has them), dev beside test."""
    fig, ax = plt.subplots(figsize=(8.5, 4.2), layout="constrained")
    x = np.arange(len(ERROR_CLASSES))
    splits = [(name, m) for name, m in (("dev", dev_metrics), ("test", test_metrics))
              if m.get("evaluated")]
    if not splits:
        ax.text(0.5, 0.5, "no dev or test titles to score (final fit)", ha="center",
                va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    width = 0.8 / len(splits)
    for i, (name, m) in enumerate(splits):
        counts = [m[f"errors_{c}"] for c in ERROR_CLASSES]
        bars = ax.bar(x + (i - (len(splits) - 1) / 2) * width, counts, width,
                      color={"dev": "tab:gray", "test": "tab:blue"}[name],
                      label=f"{name} ({m['titles']} titles, {m['n_gold']} gold entities)")
        ax.bar_label(bars, padding=2, fontsize=8)
    ax.set_xticks(x, [ERROR_LABELS[c] for c in ERROR_CLASSES])
    ax.margins(y=0.12)
    ax.set_ylabel("entities")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("flat predictions by error class (missed: gold entities no prediction "
                 "overlaps)\ndev selected the epoch", fontsize=10)
    return fig


def plot_confusion_matrix(matrix: pd.DataFrame):
    """The test confusion matrix as a heatmap with the counts in its cells."""
    n = len(matrix)
    side = max(4.0, 0.42 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    if not matrix.to_numpy().any():
        ax.text(0.5, 0.5, "no test entities to pair (final fit)", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    values = matrix.to_numpy()
    # off-diagonal counts are small beside the diagonal: a square-root scale keeps them visible
    image = ax.imshow(values, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=max(1, values.max())))
    fig.colorbar(image, ax=ax, shrink=0.6, label="entities")
    dark = values > 0.45 * max(1, values.max())
    for (i, j), v in np.ndenumerate(values):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if dark[i, j] else "black")
    fonts = _cjk_fonts()
    ax.set_xticks(range(n), matrix.columns, rotation=90, fontfamily=fonts, fontsize=8)
    ax.set_yticks(range(n), matrix.index, fontfamily=fonts, fontsize=8)
    ax.set_xlabel("predicted type (none: a missed gold entity)")
    ax.set_ylabel("gold type (none: a spurious prediction)")
    ax.set_title("test: gold x predicted type of entities with overlapping spans", fontsize=10)
    return fig
