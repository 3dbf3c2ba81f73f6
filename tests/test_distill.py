"""Distillation from k-fold teachers: the averaged soft targets, their windows, the
student's loss against an independent computation, and the distill pipeline end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from jd_ner.encoding import soft_cells_cell, titles_frame, with_soft_targets
from jd_ner.modeling.batching import Example
from jd_ner.modeling.distill import average_teachers, score_floor, window_cells
from jd_ner.modeling.heads import valid_cells
from jd_ner.modeling.predict import collator_for
from jd_ner.modeling.tricks import build_objective
from jd_ner.pipelines.distill.nodes import assign_folds
from jd_ner.pipelines.train.nodes import build_model
from jd_ner.text.vocab import build_bigram_vocab, build_char_vocab, encode_bigrams, encode_chars

from .conftest import _end_mlflow_runs, tiny_config, tiny_features
from .test_pipeline_run import TINY_RUN, newest


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_teachers_probabilities_are_averaged_at_the_temperature_and_kept_above_the_floor():
    t = 2.0
    one = {0: [(0, 1, 0, 3.0), (2, 4, 1, -1.0)], 1: []}
    two = {0: [(0, 1, 0, 1.0), (5, 5, 0, -8.0)], 1: [(1, 2, 1, 0.5), (4, 4, 0, -3.63)]}
    cells = average_teachers([one, two], t, 0.05)
    # (0, 1, 0): both teachers; (2, 4, 1) and (1, 2, 1): one teacher, the other adds 0;
    # (5, 5, 0): (sigmoid(-4) + 0) / 2 = 0.009 < 0.05, dropped
    assert [c[:3] for c in cells[0]] == [(0, 1, 0), (2, 4, 1)]
    assert [c[3] for c in cells[0]] == pytest.approx([(sig(1.5) + sig(0.5)) / 2, sig(-0.5) / 2])
    # (4, 4, 0): sigmoid(-1.815) / 2 = 0.070, above the 0.05 cut
    assert [c[:3] for c in cells[1]] == [(1, 2, 1), (4, 4, 0)]
    assert [c[3] for c in cells[1]] == pytest.approx([sig(0.25) / 2, sig(-1.815) / 2])
    # the floor is the score whose probability at T is the minimum probability
    assert sig(score_floor(t, 0.05) / t) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="temperature"):
        average_teachers([one], 0.0, 0.05)


def test_soft_cells_are_kept_in_the_windows_that_hold_them_whole():
    cells = [(0, 2, 0, 0.9), (3, 6, 1, 0.4), (8, 9, 0, 0.2)]
    assert window_cells(cells, 3, 5) == ((0, 3, 1, 0.4),)
    assert window_cells(cells, 0, 10) == tuple(cells)
    # the window [3, 8) holds a cell ending at 7, not one ending at 8
    assert window_cells([(3, 7, 0, 0.5), (3, 8, 0, 0.5)], 3, 5) == ((0, 4, 0, 0.5),)


def test_folds_cover_the_train_titles_once_each():
    titles = titles_frame([{"title_id": i * 3, "text": str(i), "spans": "[]", "line": i}
                           for i in range(11)])
    folds = assign_folds(titles, {"folds": 3, "seed": 1})
    flat = [tid for fold in folds["folds"] for tid in fold]
    assert sorted(flat) == sorted(titles["title_id"]) and len(folds["folds"]) == 3
    assert {len(f) for f in folds["folds"]} == {3, 4}
    with pytest.raises(ValueError, match="folds"):
        assign_folds(titles, {"folds": 1, "seed": 1})


TEXTS = ["小米手机壳防摔", "华为充电器快充", "苹果数据线"]


def tiny_student(trick: str = "scratch", weight: float = 0.7):
    config = tiny_config(trick)
    config["model"]["encoder"]["dropout"] = 0.0
    config["objective"]["distill"] = {"weight": weight}
    chars, bigrams = build_char_vocab(TEXTS), build_bigram_vocab(TEXTS, 1)
    torch.manual_seed(0)
    model = build_model(config, chars.to_dict(), bigrams.to_dict(), None, None, {},
                        {"labels": ["1", "4"]}, tiny_features(), None)
    return model, build_objective(config["objective"], model), chars, bigrams


def numpy_multilabel_ce(s: np.ndarray, p: np.ndarray, valid: np.ndarray) -> float:
    """log(1 + sum over valid cells of (1 - p) e^s) + log(1 + sum over valid cells of p e^-s):
    the soft-label multilabel CE (kexue.fm/archives/9064), p in {0, 1} giving the hard one."""
    s, p = s[valid].astype(np.float64), p[valid].astype(np.float64)
    return float(np.log1p(((1 - p) * np.exp(s)).sum()) + np.log1p((p * np.exp(-s)).sum()))


def test_student_loss_is_gold_ce_plus_weighted_soft_ce_computed_independently():
    model, objective, chars, bigrams = tiny_student(weight=0.7)
    # a gold title with soft targets, an unlabelled title (gold weight 0) with soft targets,
    # a gold title without (a row the soft term leaves out)
    examples = [
        Example(0, 0, 7, tuple(encode_chars(chars, TEXTS[0])),
                tuple(encode_bigrams(bigrams, TEXTS[0])), ((0, 1, 0), (2, 4, 1)),
                soft=((0, 1, 0, 0.8), (2, 4, 1, 0.6), (5, 6, 1, 0.1))),
        Example(1, 0, 7, tuple(encode_chars(chars, TEXTS[1])),
                tuple(encode_bigrams(bigrams, TEXTS[1])), (), weight=0.0,
                soft=((0, 1, 0, 0.9), (2, 2, 1, 1.0))),
        Example(2, 0, 5, tuple(encode_chars(chars, TEXTS[2])),
                tuple(encode_bigrams(bigrams, TEXTS[2])), ((0, 1, 1),)),
    ]
    batch = collator_for(model)(examples)
    assert batch["soft_targets"][0, 1, 3, 5].item() == pytest.approx(0.6)  # [CLS] shifts by 1
    assert batch["has_soft_targets"].tolist() == [1.0, 1.0, 0.0]
    model.train()
    total, parts = objective(model, batch)
    with torch.no_grad():
        scores = model.head(model.features(batch, None)).double().numpy()
    valid = valid_cells(batch["char_mask"]).expand(scores.shape).numpy()
    gold = batch["labels"].numpy().astype(float)
    soft = batch["soft_targets"].numpy()
    b, t = scores.shape[:2]
    gold_term = sum(w * numpy_multilabel_ce(scores[i, k], gold[i, k], valid[i, k])
                    for i, w in enumerate([1.0, 0.0, 1.0]) for k in range(t)) / (b * t)
    soft_term = sum(numpy_multilabel_ce(scores[i, k], soft[i, k], valid[i, k])
                    for i in range(2) for k in range(t)) / (b * t)
    assert parts["loss_main"].item() == pytest.approx(gold_term, rel=1e-5)
    assert parts["loss_distill"].item() == pytest.approx(soft_term, rel=1e-5)
    assert total.item() == pytest.approx(gold_term + 0.7 * soft_term, rel=1e-5)
    # targets of exactly 0 and 1 make the soft term the hard one
    hard = [Example(e.title_id, 0, e.title_length, e.char_ids, e.bigram_ids, e.spans,
                    soft=tuple((s, en, lab, 1.0) for s, en, lab in e.spans)) for e in examples[:1]]
    _, hard_parts = objective(model, collator_for(model)(hard))
    assert hard_parts["loss_distill"].item() == pytest.approx(hard_parts["loss_main"].item(),
                                                              rel=1e-5)


def test_mixup_mixes_the_soft_losses_with_each_rows_partner():
    from jd_ner.modeling.tricks import Mixer

    _, objective, _, _ = tiny_student()
    torch.manual_seed(3)
    scores = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    mask = torch.tensor([[False, True, True, True, False], [False, True, True, False, False]])
    valid = valid_cells(mask)
    targets = torch.zeros(2, 2, 5, 5)
    targets[0, 0, 1, 2], targets[0, 1, 3, 3], targets[1, 1, 1, 1] = 0.8, 0.3, 0.6
    has = torch.tensor([1.0, 0.0])  # the second row has no soft targets of its own
    lam, perm = 0.3, torch.tensor([1, 0])
    got = objective.soft_loss(scores, targets, has, valid, Mixer(lam, perm, "encoder")).item()
    s, v = scores.numpy(), valid.expand(scores.shape).numpy()

    def term(p, rows):
        return sum(rows[i] * numpy_multilabel_ce(s[i, k], p[i, k], v[i, k])
                   for i in range(2) for k in range(2)) / 4

    t = targets.numpy()
    expected = lam * term(t, [1.0, 0.0]) + (1 - lam) * term(t[[1, 0]], [0.0, 1.0])
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("p", [0.9, 0.3, 0.02])
def test_the_soft_loss_of_a_lone_cell_is_least_at_half_the_teachers_log_odds(p):
    # valid cells: one; its target p; the loss over a grid of scores, minimised numerically
    grid = np.linspace(-6, 6, 24001)
    losses = [numpy_multilabel_ce(np.array([s]), np.array([p]), np.array([True])) for s in grid]
    best = grid[int(np.argmin(losses))]
    assert best == pytest.approx(math.log(p / (1 - p)) / 2, abs=1e-3)
    from jd_ner.modeling.losses import soft_label_gp_loss

    s = torch.tensor([[[[best]]]], dtype=torch.float64, requires_grad=True)
    loss = soft_label_gp_loss(s, torch.tensor([[[[p]]]]), torch.ones(1, 1, 1, 1, dtype=torch.bool), 0.0)
    loss.backward()
    assert abs(s.grad.item()) < 1e-3  # the project's loss is stationary there too


def test_soft_targets_join_the_train_windows_and_add_unlabelled_titles():
    model, _, chars, bigrams = tiny_student()
    train = [Example(5, 0, 7, tuple(encode_chars(chars, TEXTS[0])), None, ((0, 1, 0),))]
    targets = pd.DataFrame({
        "title_id": [5, 6], "text": [TEXTS[0], TEXTS[2]], "spans": ['[[0, 1, "1"]]', "[]"],
        "line": [1, 2], "source": ["train", "unlabelled"],
        "soft": [soft_cells_cell([(0, 1, 0, 0.75)], model.labels),
                 soft_cells_cell([(0, 1, 1, 0.5)], model.labels)],
        "train_split": ["x", "x"]})
    out = with_soft_targets(model, train, {5: TEXTS[0]}, targets, first_id=9)
    assert out[0].soft == ((0, 1, 0, 0.75),) and out[0].weight == 1.0
    assert [(e.title_id, e.weight, e.soft, e.spans) for e in out[1:]] == [
        (9, 0.0, ((0, 1, 1, 0.5),), ())]
    with pytest.raises(ValueError, match="not this split's title"):
        with_soft_targets(model, train, {5: TEXTS[1]}, targets, first_id=9)
    with pytest.raises(ValueError, match="no soft targets"):
        with_soft_targets(model, train + [Example(7, 0, 3, (1, 2, 3))], {5: TEXTS[0], 7: "abc"},
                          targets, first_id=9)
    bad = targets.assign(soft=['[[0, 1, "9", 0.5]]', "[]"])
    with pytest.raises(ValueError, match="type '9'"):
        with_soft_targets(model, train, {5: TEXTS[0]}, bad, first_id=9)


def test_each_teacher_trains_without_its_fold_and_scores_only_it(monkeypatch):
    from jd_ner.pipelines.distill import nodes

    model, _, _, _ = tiny_student()
    titles = titles_frame([{"title_id": i, "text": TEXTS[i % 3], "spans": "[]", "line": i}
                           for i in range(7)])
    windows = pd.DataFrame({"title_id": titles["title_id"], "char_start": 0,
                            "title_length": titles["text"].str.len(), "text": titles["text"]})
    folds = assign_folds(titles, {"folds": 3, "seed": 1})
    trained_on, scored = [], []

    def fake_train(teacher, train_input, *args, split=None, **kwargs):
        trained_on.append(set(train_input["title_id"]))
        teacher.spec.training = {"history": []}
        return teacher, None

    def fake_predict(teacher, frame, *args, **kwargs):
        scored.append(set(frame["title_id"]))
        return frame[["title_id"]].assign(spans="[]", scores=[[] for _ in range(len(frame))])

    def fake_score(pred, frame, *args):
        assert list(pred["title_id"]) == list(frame["title_id"])  # pooled in title order
        return {"flat_f1": 0.5, "flat_precision": 0.5, "flat_recall": 0.5,
                "interval_95": {"f1": [0.4, 0.6]}}, None

    monkeypatch.setattr(nodes, "train_model", fake_train)
    monkeypatch.setattr(nodes, "predict_titles", fake_predict)
    monkeypatch.setattr(nodes, "score_titles", fake_score)
    config = tiny_config("scratch")
    teachers, report = nodes.train_teachers(model, windows, windows.iloc[:0], {}, titles.iloc[:0],
                                            config, {}, None, folds, titles, {})
    for held, seen, judged in zip(folds["folds"], trained_on, scored, strict=True):
        assert seen == set(titles["title_id"]) - set(held) and judged == set(held)
    assert list(teachers) == ["fold_1", "fold_2", "fold_3"] and report["oof_f1"] == 0.5


DISTILL_RUN = {**TINY_RUN, "distill": {"folds": 2}}


def test_distill_pipeline_trains_teachers_and_a_linked_student_that_submit_uses(project, monkeypatch):
    monkeypatch.chdir(project)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=DISTILL_RUN) as session:
        session.run(pipeline_names=["distill"])
    _end_mlflow_runs()
    data = project / "data"
    report = json.loads((data / "08_reporting/distill_teachers_report.json").read_text())
    folds = json.loads((data / "05_model_input/distill_folds.json").read_text())
    train = pd.read_parquet(newest(data / "03_primary", "train_titles.parquet"))
    assert sorted(sum(folds["folds"], [])) == sorted(train["title_id"])
    assert report["folds"] == 2 and 0.0 <= report["oof_f1"] <= 1.0
    assert [r["held_out_titles"] for r in report["teachers"]] == [len(f) for f in folds["folds"]]
    teachers = newest(data / "06_models", "distill_teachers")
    assert json.loads((teachers / "models.json").read_text()) == {"models": ["fold_1", "fold_2"]}
    targets = pd.read_parquet(newest(data / "06_models", "soft_targets.parquet"))
    unlabelled = pd.read_parquet(newest(data / "03_primary", "unlabelled_titles.parquet"))
    assert (targets["source"] == "train").sum() == len(train)
    assert (targets["source"] == "unlabelled").sum() == len(
        set(unlabelled["text"]) - set(train["text"])) == 9
    assert all(0.01 <= p <= 1 for cell in targets["soft"] for *_, p in json.loads(cell))
    student = json.loads((newest(data / "06_models", "ner_model") / "config.json").read_text())
    info = student["training"]["distill"]
    assert info["role"] == "student" and info["unlabelled_titles"] == 9
    assert info["teachers_oof_f1"] == report["oof_f1"] and info["folds"] == 2
    assert "loss_distill" in student["training"]["history"][0]
    assert newest(data / "07_model_output", "submission.txt").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("jd_ner").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("distill.role") == "student")
    children = {r.info.run_id: r for r in runs if r.data.tags.get("distill.role") == "teacher"}
    assert set(info["teacher_runs"]) == set(children) and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    assert all("fold_f1" in r.data.metrics and "epoch/dev_f1" in r.data.metrics
               for r in children.values())
    assert "teachers_oof_f1" in parent.data.metrics and "test_f1" in parent.data.metrics
