"""The evaluate pipeline's reports: error pairs and table, confusion matrix, plots, and the
synthetic demo's test titles. Checked against a three-title example worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from jd_ner.demo import generate, write_demo
from jd_ner.encoding import titles_frame
from jd_ner.metrics import error_classes
from jd_ner.pipelines.evaluate.nodes import (
    ERROR_COLUMNS,
    confusion_counts,
    pair_entities,
    plot_confusion_matrix,
    plot_error_classes,
    plot_learning_curve,
    plot_per_type,
    score_titles,
    tabulate_errors,
)
from jd_ner.text.bio import parse_bio

from .conftest import DECODE

# Three titles, gold and predicted spans (start, end inclusive, type, score):
#   1 小米手机壳黑色   gold 小米/1 手机壳/4 黑色/16; predicted 小米/1 (exact), 手机壳/1 (same
#                     span, other type: wrong_type); 黑色 not predicted (missed)
#   2 华为充电器 快充  gold 华为/1 充电器/4 快充/11; predicted 华为充/1 (overlaps 华为 of its type:
#                     wrong_boundary), 电器/11 (overlaps 充电器/4 only: wrong_both), 快充/11 (exact)
#   3 数据线          no gold; predicted 数据线/4 (spurious) and 据线/4, which overlaps it with
#                     a lower score, so decoding drops it and it is no error at all
TITLES = [(1, "小米手机壳黑色", [(0, 1, "1"), (2, 4, "4"), (5, 6, "16")]),
          (2, "华为充电器 快充", [(0, 1, "1"), (2, 4, "4"), (6, 7, "11")]),
          (3, "数据线", [])]
PREDICTED = {1: [(0, 1, "1", 0.9), (2, 4, "1", 0.8)],
             2: [(0, 2, "1", 0.7), (3, 4, "11", 0.6), (6, 7, "11", 0.95)],
             3: [(0, 2, "4", 0.5), (1, 2, "4", 0.4)]}
HAND_COUNTS = {"exact": 2, "wrong_type": 1, "wrong_boundary": 1, "wrong_both": 1,
               "spurious": 1, "missed": 1}


def titles(ids=(1, 2, 3)) -> pd.DataFrame:
    return titles_frame([{"title_id": i, "text": text, "spans": json.dumps(spans), "line": i}
                         for i, text, spans in TITLES if i in ids])


def predictions(ids=(1, 2, 3)) -> pd.DataFrame:
    return pd.DataFrame([{"title_id": i, "spans": json.dumps([s[:3] for s in PREDICTED[i]]),
                          "scores": [s[3] for s in PREDICTED[i]]} for i in ids])


PARAMS = {"bootstrap_samples": 50, "bootstrap_seed": 0}


def test_entity_pairs_match_the_hand_classification_and_the_metrics_counts():
    pairs = pair_entities(predictions(), titles(), DECODE)
    rows = [(r.title_id, r.error_class, None if pd.isna(r.gold_start) else
             (r.gold_start, r.gold_end, r.gold_type),
             None if pd.isna(r.pred_start) else (r.pred_start, r.pred_end, r.pred_type),
             None if pd.isna(r.pred_score) else r.pred_score) for r in pairs.itertuples()]
    assert rows == [
        (1, "exact", (0, 1, "1"), (0, 1, "1"), 0.9),
        (1, "wrong_type", (2, 4, "4"), (2, 4, "1"), 0.8),
        (1, "missed", (5, 6, "16"), None, None),
        (2, "wrong_boundary", (0, 1, "1"), (0, 2, "1"), 0.7),
        (2, "wrong_both", (2, 4, "4"), (3, 4, "11"), 0.6),
        (2, "exact", (6, 7, "11"), (6, 7, "11"), 0.95),
        (3, "spurious", None, (0, 2, "4"), 0.5),
    ]
    # the classes are the ones the metrics count, not a second classification
    metrics, _ = score_titles(predictions(), titles(), DECODE, PARAMS)
    assert pairs["error_class"].value_counts().to_dict() == HAND_COUNTS
    assert {k: metrics[f"errors_{k}"] for k in HAND_COUNTS} == HAND_COUNTS


def test_entity_pairs_add_up_to_error_classes_on_random_entities():
    import random

    rng = random.Random(3)

    def entities(n):
        out = set()
        for _ in range(n):
            tid, start = rng.randint(0, 4), rng.randint(0, 20)
            out.add((tid, start, start + rng.randint(0, 4), rng.choice("abc")))
        return out

    from jd_ner.evaluation import classify_entities

    for _ in range(30):
        pred, gold = entities(12), entities(10)
        rows = classify_entities(pred, gold)
        assert sorted(p for _, _, p in rows if p) == sorted(pred)
        counted = {k: sum(1 for c, _, _ in rows if c == k) for k in HAND_COUNTS}
        assert counted == dict(error_classes(pred, gold))


def test_error_table_has_one_row_per_dev_and_test_error_with_span_texts():
    dev = pair_entities(predictions(), titles(), DECODE)
    test = pair_entities(predictions([3]), titles([3]), DECODE)
    table = tabulate_errors(dev, titles(), test, titles([3]))
    assert list(table.columns) == ERROR_COLUMNS
    got = [tuple(None if pd.isna(v) else v for v in row)
           for row in table[["split", "title_id", "error_class", "gold_text", "gold_type",
                             "pred_text", "pred_type", "pred_score"]].itertuples(index=False)]
    assert got == [
        ("dev", 1, "wrong_type", "手机壳", "4", "手机壳", "1", 0.8),
        ("dev", 1, "missed", "黑色", "16", None, None, None),
        ("dev", 2, "wrong_boundary", "华为", "1", "华为充", "1", 0.7),
        ("dev", 2, "wrong_both", "充电器", "4", "电器", "11", 0.6),
        ("dev", 3, "spurious", None, None, "数据线", "4", 0.5),
        ("test", 3, "spurious", None, None, "数据线", "4", 0.5),
    ]
    assert list(table["title"]) == ["小米手机壳黑色"] * 2 + ["华为充电器 快充"] * 2 + ["数据线"] * 2
    assert table.loc[3, ["gold_start", "gold_end", "pred_start", "pred_end"]].tolist() == [2, 4, 3, 4]


def test_reports_of_an_empty_split(tmp_path):  # a final fit leaves dev and test empty
    empty = titles([])
    pairs = pair_entities(predictions([]).reindex(columns=["title_id", "spans", "scores"]),
                          empty, DECODE)
    assert pairs.empty
    table = tabulate_errors(pairs, empty, pairs, empty)
    assert table.empty and list(table.columns) == ERROR_COLUMNS
    _, per_type = score_titles(pairs, empty, DECODE, PARAMS)
    matrix = confusion_counts(pairs, per_type, top_n=5)
    assert matrix.values.tolist() == [[0]]
    assert is_png(plot_confusion_matrix(matrix), tmp_path, "empty_confusion")


def per_type_of() -> pd.DataFrame:
    _, per_type = score_titles(predictions(), titles(), DECODE, PARAMS)
    return per_type


def test_confusion_matrix_by_hand():
    pairs = pair_entities(predictions(), titles(), DECODE)
    per_type = per_type_of()
    full = confusion_counts(pairs, per_type, top_n=10)
    labels = ["1", "4", "11", "16", "none"]  # gold counts 2, 2, 1, 1 (ties in type order)
    expected = pd.DataFrame(0, index=labels, columns=labels)
    expected.loc["1", "1"] = 2       # 小米 exact, 华为充 wrong boundary
    expected.loc["4", "1"] = 1       # 手机壳 typed 1
    expected.loc["4", "11"] = 1      # 电器/11 inside 充电器/4
    expected.loc["11", "11"] = 1     # 快充 exact
    expected.loc["16", "none"] = 1   # 黑色 missed
    expected.loc["none", "4"] = 1    # 数据线 spurious
    assert full.values.tolist() == expected.values.tolist()
    assert list(full.index) == labels and list(full.columns) == labels
    top = confusion_counts(pairs, per_type, top_n=2)  # 11 and 16 pooled
    assert list(top.index) == ["1", "4", "other", "none"]
    assert top.values.tolist() == [[2, 0, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1], [0, 1, 0, 0]]
    # a per-type table read back from CSV has numeric type names
    as_read = per_type.assign(type=per_type["type"].astype(int))
    assert confusion_counts(pairs, as_read, top_n=10).equals(full)


def is_png(fig, tmp_path: Path, name: str) -> bool:
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_confusion_and_error_class_plots_are_pngs(tmp_path):
    pairs = pair_entities(predictions(), titles(), DECODE)
    fig = plot_confusion_matrix(confusion_counts(pairs, per_type_of(), top_n=10))
    cells = sorted(t.get_text() for t in fig.axes[0].texts)
    assert cells == ["1", "1", "1", "1", "1", "2"]  # the hand matrix's non-zero counts
    assert is_png(fig, tmp_path, "confusion")
    metrics, _ = score_titles(predictions(), titles(), DECODE, PARAMS)
    fig = plot_error_classes(metrics, metrics)
    heights = [int(b.get_height()) for b in fig.axes[0].patches]
    assert heights == [2, 1, 1, 1, 1, 1] * 2  # dev bars, then test bars
    assert is_png(fig, tmp_path, "errors")
    unevaluated = {"evaluated": False, "titles": 0}
    assert is_png(plot_error_classes(unevaluated, unevaluated), tmp_path, "no_errors")


def test_per_type_plot_shows_p_r_f1_support_and_micro_f1_for_the_top_types(tmp_path):
    per_type = pd.DataFrame([{"type": str(t), "precision": 0.5, "recall": 0.25, "f1": 1 / 3,
                              "n_gold": 100 - t, "n_pred": 10, "tp": 5} for t in range(1, 31)])
    metrics = {"evaluated": True, "flat_f1": 0.61}
    fig = plot_per_type(per_type, metrics, top_n=25)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 25 and labels[-1] == "1 (n=99)" and labels[0] == "25 (n=75)"
    assert len(ax.patches) == 3 * 25  # P, R and F1 bars
    assert sum(t.get_text() == "0.33" for t in ax.texts) == 25  # F1 printed on its bars
    assert any(list(line.get_xdata()) == [0.61, 0.61] for line in ax.lines)
    assert is_png(fig, tmp_path, "per_type")
    assert is_png(plot_per_type(per_type.iloc[:0], {"evaluated": False}, 25), tmp_path, "empty")


def test_learning_curve_marks_the_selected_epoch_and_names_the_trick(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "train_loss": [3.0, 2.0, 1.5, 1.2],
                            "dev_precision": [0.5, 0.8, 0.7, 0.75],
                            "dev_recall": [0.3, 0.6, 0.7, 0.6],
                            "dev_f1": [0.375, 0.7, 0.7, 0.667]})
    fig = plot_learning_curve(history, {"trick": "rdrop+gpkg", "optim": {"seed": 7}})
    title = fig._suptitle.get_text()
    assert "rdrop+gpkg" in title and "seed 7" in title and "epoch 2 of 4" in title
    loss_ax, dev_ax = fig.axes
    legend = [t.get_text() for t in dev_ax.get_legend().get_texts()]
    # ties keep the first epoch, as training does
    assert "selected: epoch 2, F1 0.700" in legend
    assert {"dev precision", "dev recall", "dev F1 (flat)"} <= set(legend)
    assert is_png(fig, tmp_path, "curve")
    final_fit = plot_learning_curve(history[["epoch", "train_loss"]], {"trick": "baseline"})
    assert "kept epoch 4 of 4" in final_fit._suptitle.get_text()
    assert is_png(final_fit, tmp_path, "final_fit_curve")


def test_a_model_shows_its_own_learning_curve_and_version(tmp_path):
    from types import SimpleNamespace

    from jd_ner.pipelines.evaluate.nodes import plot_model_learning_curve

    own = [{"epoch": 1, "train_loss": 2.0, "dev_f1": 0.4}, {"epoch": 2, "train_loss": 1.0,
                                                             "dev_f1": 0.6}]
    newest = pd.DataFrame({"epoch": [1], "train_loss": [9.0], "dev_f1": [0.1]})  # another run's
    model = SimpleNamespace(version="2026-01-01T00.00.00.000Z", spec=SimpleNamespace(
        training={"trick": "mixup", "seed": 3, "history": own}))
    title = plot_model_learning_curve(model, newest, {"trick": "rdrop"})._suptitle.get_text()
    assert "model 2026-01-01T00.00.00.000Z" in title and "trick mixup, seed 3" in title
    assert "epoch 2 of 2" in title
    older = SimpleNamespace(version="v0", spec=SimpleNamespace(training=None))
    title = plot_model_learning_curve(older, newest, {"trick": "rdrop"})._suptitle.get_text()
    assert "trick rdrop" in title and "epoch 1 of 1" in title


def test_demo_test_titles_are_as_long_as_its_training_titles(tmp_path):
    write_demo(tmp_path, n_train=200, n_test=60, seed=5)
    train, _ = parse_bio((tmp_path / "synthetic_train.txt").read_text(encoding="utf-8"), "train")
    test = (tmp_path / "synthetic_test.txt").read_text(encoding="utf-8").splitlines()
    assert len(train) == 200 and len(test) == 60
    longest = max(len(t.text) for t in train)
    assert max(len(t) for t in test) <= longest + 10
    assert not {t.text for t in train} & set(test)
    assert test == [t for t, _ in generate(260, 5)[200:]]  # same generator, same stream


@pytest.mark.parametrize("name", ["synthetic_train.txt", "synthetic_test.txt"])
def test_committed_demo_files_are_what_the_demo_command_writes(tmp_path, name):
    write_demo(tmp_path)  # `python -m jd_ner.demo` with its defaults
    committed = Path(__file__).resolve().parents[1] / "data" / "01_raw" / name
    assert (tmp_path / name).read_bytes() == committed.read_bytes()
