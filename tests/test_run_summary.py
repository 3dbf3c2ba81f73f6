"""The closing summary a `kedro run` prints."""

import json
from pathlib import Path

from jd_ner.hooks import run_summary


def test_the_summary_names_model_scores_outputs_and_the_mlflow_run():
    version = "2026-01-01T00.00.00.000Z"
    saved = {"submission": Path(f"data/07_model_output/submission.txt/{version}/submission.txt"),
             "learning_curve_plot": Path(f"data/08_reporting/learning_curve.png/{version}/"
                                         "learning_curve.png"),
             "test_metrics": Path(f"data/08_reporting/test_metrics.json/{version}/test_metrics.json")}
    summary = {"test": {"f1": 0.74171, "f1_95": [0.7325, 0.7507], "precision": 0.8161,
                        "recall": 0.6797}, "dev": {"f1": 0.7464}}
    lines = run_summary((version, True), summary, saved, ("1", "abc"))
    assert lines[0] == f"model {version} (trained in this run)"
    assert lines[1] == ("test F1 0.7417 (95% 0.7325-0.7507; P 0.816, R 0.680) · dev F1 0.7464 "
                        "(selected the epoch)")
    assert lines[2] == f"submission: {saved['submission']}"
    assert lines[3] == (f"reports: 2 files under data/08_reporting/<name>/{version}/ "
                        "(plots: learning_curve.png)")
    assert lines[4].startswith("MLflow run abc: ") and "#/experiments/1/runs/abc?" in lines[4]
    unevaluated = run_summary((version, False), {"note": "UNEVALUATED: final fit"}, {}, None)
    assert unevaluated == [f"model {version} (loaded)", "UNEVALUATED: final fit"]


def test_a_distill_run_also_names_its_teachers(tmp_path):
    report = tmp_path / "08_reporting" / "distill_teachers_report.json"
    report.parent.mkdir()
    report.write_text(json.dumps({"folds": 3, "oof_f1": 0.73251, "teachers": [
        {"fold_f1": 0.7388}, {"fold_f1": 0.7300}, {"fold_f1": 0.7316}]}))
    lines = run_summary(("v", True), None, {"distill_teachers_report": report}, None)
    assert lines[1] == ("teachers: 3, out-of-fold F1 0.7325 (folds 0.7300-0.7388); the model "
                        "above is their student")
