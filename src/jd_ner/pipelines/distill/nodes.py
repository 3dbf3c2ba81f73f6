"""k-fold teachers -> one student: knowledge distillation of an ensemble into one model.

The train split is cut into k folds (by title). Teacher i trains on the other k - 1 folds
(its epoch selected on dev, as any run) and labels its held-out fold, so the k held-out
folds together give an out-of-fold F1 on every train title. The teachers' probabilities
on the train titles and on the unlabelled titles are averaged (``jd_ner.modeling.distill``)
into sparse soft targets; the student then trains on the gold titles with their soft
targets and on the unlabelled titles with soft targets only (``train.objective.distill``).
The student is the run's ``ner_model``: what evaluate and submit use.

On a train title k - 1 of the k teachers trained on it, so its soft targets lean to its
gold labels; the unlabelled titles carry the ensemble's own knowledge. Under the default
schedule (``train.optim.epochs: auto``, a fixed step budget) the unlabelled windows share
the student's steps: with 5,000 of them it sees the gold titles about 9 times, not 14.
"""

from __future__ import annotations

import copy
import logging
import random

import pandas as pd

from jd_ner.checkpoints import CheckpointStore
from jd_ner.encoder_files import texts_digest
from jd_ner.encoding import examples_for_model, soft_cells_cell, window_titles
from jd_ner.modeling.distill import average_teachers, score_floor
from jd_ner.modeling.ensemble import ensemble_members
from jd_ner.modeling.model import NerModel
from jd_ner.modeling.predict import predict_spans
from jd_ner.modeling.training import resolve_device
from jd_ner.pipelines.evaluate.nodes import predict_titles, score_titles
from jd_ner.pipelines.train.nodes import train_model
from jd_ner.tracking import child_run, log_metrics, log_tags

logger = logging.getLogger(__name__)


def assign_folds(train_titles: pd.DataFrame, params: dict) -> dict:
    """``folds`` lists of train title ids, a seeded shuffle dealt round-robin."""
    k = int(params["folds"])
    if not 2 <= k <= len(train_titles):
        raise ValueError(f"distill.folds must be between 2 and the {len(train_titles)} train "
                         f"titles, got {k}")
    ids = sorted(int(t) for t in train_titles["title_id"])
    random.Random(int(params["seed"])).shuffle(ids)
    return {"k": k, "seed": int(params["seed"]), "folds": [sorted(ids[i::k]) for i in range(k)]}


def single_models(config: dict) -> dict:
    """The settings with ``train.ensemble.members`` 1: teachers and student are single
    models (the k teachers are the ensemble, distilled into one student)."""
    members = ensemble_members(config)
    if members == 1:
        return config
    logger.info("distill: teachers and student are single models (train.ensemble.members %d "
                "does not apply: the k teachers are the ensemble)", members)
    return {**config, "ensemble": {**config["ensemble"], "members": 1}}


def train_teachers(model: NerModel, train_input: pd.DataFrame, dev_input: pd.DataFrame,
                   lexicon_folds: dict, dev_titles: pd.DataFrame, config: dict, decode: dict,
                   checkpoints: CheckpointStore, folds: dict, train_titles: pd.DataFrame,
                   evaluate: dict) -> tuple[dict[str, NerModel], dict]:
    """One teacher per fold, trained (from ``model``'s initial weights, with its own
    seed) on the other folds, each in an MLflow run nested in this one; their held-out
    folds' predictions scored together give the out-of-fold F1."""
    if model.spec.lexicon:
        raise ValueError("the distill pipeline does not combine with the entity lexicon (gpkg): "
                         "the model's lexicon holds every train title's entities, so a teacher "
                         "would read its held-out fold's labels; drop model.lexicon")
    if (config.get("pseudo_labels") or {}).get("enabled"):
        raise ValueError("the distill pipeline does not combine with pseudo labels (trick "
                         "pseudo): its student learns unlabelled titles from the teachers' soft "
                         "targets instead")
    config = single_models(config)
    split = texts_digest(window_titles(train_input).values())
    seed, k = int(config["optim"]["seed"]), int(folds["k"])
    teachers, rows, held_out_predictions = {}, [], []
    for i, held in enumerate(folds["folds"], start=1):
        held = set(held)
        cfg = copy.deepcopy(config)
        cfg["optim"]["seed"] = seed + i  # its own batch order and dropout masks
        name = f"fold_{i}"
        with child_run(f"teacher {i}/{k} · {config['trick']}",
                       {"distill.role": "teacher", "distill.fold": i, "distill.folds": k,
                        "trick": config["trick"], "seed": seed + i}) as run_id:
            logger.info("teacher %d of %d: trained without fold %d (%d titles held out)",
                        i, k, i, len(held))
            teacher, _ = train_model(copy.deepcopy(model),
                                     train_input[~train_input["title_id"].isin(held)],
                                     dev_input, lexicon_folds, dev_titles, cfg, decode,
                                     checkpoints, split=split)
            fold_titles = train_titles[train_titles["title_id"].isin(held)]
            pred = predict_titles(teacher, fold_titles, evaluate, progress=False)
            metrics, _ = score_titles(pred, fold_titles, decode, evaluate)
            log_metrics({"fold_f1": metrics["flat_f1"]})
        held_out_predictions.append(pred)
        history = teacher.spec.training["history"]
        row = {"fold": i, "held_out_titles": len(held), "fold_f1": metrics["flat_f1"],
               "fold_precision": metrics["flat_precision"], "fold_recall": metrics["flat_recall"],
               "dev_f1": max((r["dev_f1"] for r in history if "dev_f1" in r),
                             default=float("nan")),
               "seed": seed + i, "mlflow_run_id": run_id}
        teacher.spec.training["distill"] = {"role": "teacher", "fold": i, "folds": k,
                                            "fold_f1": metrics["flat_f1"], "mlflow_run_id": run_id}
        teachers[name] = teacher
        rows.append(row)
        logger.info("teacher %d of %d: held-out fold F1 %.4f", i, k, metrics["flat_f1"])
    pooled = pd.concat(held_out_predictions, ignore_index=True).set_index("title_id", drop=False)
    oof, _ = score_titles(pooled.loc[train_titles["title_id"]].reset_index(drop=True),
                          train_titles, decode, evaluate)
    report = {"folds": k, "seed": folds["seed"], "train_split": split,
              "oof_f1": oof["flat_f1"], "oof_precision": oof["flat_precision"],
              "oof_recall": oof["flat_recall"], "oof_f1_95": oof["interval_95"]["f1"],
              "teachers": rows}
    for teacher in teachers.values():  # what the student records of its teachers
        teacher.spec.training["distill"]["oof_f1"] = oof["flat_f1"]
    log_metrics({"teachers_oof_f1": oof["flat_f1"]})
    log_tags({"distill.teacher_runs": ",".join(str(r["mlflow_run_id"]) for r in rows),
              "distill.folds": k})
    logger.info("teachers: out-of-fold F1 %.4f over %d train titles", oof["flat_f1"],
                len(train_titles))
    return teachers, report


def teacher_targets(teachers: dict[str, NerModel], train_titles: pd.DataFrame,
                    unlabelled_titles: pd.DataFrame, params: dict,
                    evaluate: dict) -> tuple[pd.DataFrame, dict]:
    """Soft targets (a soft-target table, see ``jd_ner.encoding``) for every train title
    and for the unlabelled titles that are not train titles (all, or a seeded sample of
    ``max_unlabelled``), from the teachers' averaged probabilities."""
    if not teachers:
        raise ValueError("no teachers: run the distill pipeline's train_teachers first")
    temperature, floor_p = float(params["temperature"]), float(params["min_probability"])
    floor = score_floor(temperature, floor_p)
    extra = unlabelled_titles[~unlabelled_titles["text"].isin(set(train_titles["text"]))]
    limit = int(params["max_unlabelled"] or 0)
    if not params["unlabelled"]:
        extra = extra.iloc[:0]
    elif 0 < limit < len(extra):
        keep = sorted(random.Random(int(params["seed"])).sample(range(len(extra)), limit))
        extra = extra.iloc[keep]
    first = int(train_titles["title_id"].max()) + 1
    titles = pd.concat([
        train_titles[["title_id", "text", "spans", "line"]].assign(source="train"),
        extra[["text", "line"]].assign(title_id=range(first, first + len(extra)), spans="[]",
                                       source="unlabelled"),
    ], ignore_index=True)
    device, batch = resolve_device(evaluate["device"]), int(evaluate["batch_size"])
    labels = None
    predictions = []
    for name, teacher in teachers.items():
        if labels is not None and teacher.labels != labels:
            raise ValueError(f"teacher {name} has other entity types than the first teacher")
        labels = teacher.labels
        predictions.append(predict_spans(teacher, examples_for_model(teacher, titles), batch,
                                         device, threshold=floor, amp=bool(evaluate["amp"])))
    cells = average_teachers(predictions, temperature, floor_p)
    soft = [cells.get(int(tid), []) for tid in titles["title_id"]]
    frame = titles.assign(soft=[soft_cells_cell(c, labels) for c in soft],
                          train_split=next(iter(teachers.values())).spec.train_split)
    counts = [len(c) for c in soft]
    confident = sum(p >= 0.5 for c in soft for *_, p in c)
    report = {"titles": len(frame), "train_titles": int((frame["source"] == "train").sum()),
              "unlabelled_titles": len(extra), "teachers": len(teachers),
              "temperature": temperature, "min_probability": floor_p,
              "cells": int(sum(counts)), "cells_per_title": sum(counts) / max(1, len(counts)),
              "cells_p_at_least_half": int(confident)}
    logger.info("soft targets: %d titles (%d unlabelled), %.1f cells per title, %d with p >= 0.5",
                report["titles"], report["unlabelled_titles"], report["cells_per_title"], confident)
    if report["cells_per_title"] > 1000:  # trained teachers keep tens (JD: 40-44)
        logger.warning("the teachers give %.0f cells per title a probability of at least %.2f: "
                       "they are unsure of nearly every span (barely trained?), so the student "
                       "learns little from them and the targets are large",
                       report["cells_per_title"], floor_p)
    return frame, report


def train_student(model: NerModel, train_input: pd.DataFrame, dev_input: pd.DataFrame,
                  lexicon_folds: dict, dev_titles: pd.DataFrame, config: dict, decode: dict,
                  checkpoints: CheckpointStore, targets: pd.DataFrame,
                  teachers: dict[str, NerModel]) -> tuple[NerModel, pd.DataFrame]:
    """The student: gold loss plus ``objective.distill.weight`` x the soft-target loss;
    unlabelled titles learn from their soft targets alone. It records its teachers."""
    model, history = train_model(model, train_input, dev_input, lexicon_folds, dev_titles,
                                 single_models(config), decode, checkpoints, soft_targets=targets)
    records = [t.spec.training.get("distill", {}) for t in teachers.values()]
    model.spec.training["distill"] = {
        "role": "student", "folds": len(teachers),
        "teachers_version": getattr(next(iter(teachers.values())), "version", None),
        "teachers_oof_f1": records[0].get("oof_f1"),
        "teacher_runs": [r.get("mlflow_run_id") for r in records],
        "unlabelled_titles": int((targets["source"] == "unlabelled").sum()),
        "weight": float(config["objective"].get("distill", {}).get("weight", 1.0))}
    log_tags({"distill.role": "student"})
    return model, history
