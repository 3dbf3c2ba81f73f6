"""The whole DAG in a Kedro session, and the project CLI, on tiny synthetic data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from jd_ner.cli import normalise_params
from jd_ner.text.bio import parse_bio, validate_submission

from .conftest import TINY_MODEL, _end_mlflow_runs

TINY_RUN = {
    "train": {"model": TINY_MODEL, "optim": {"epochs": 1, "batch_size": 8, "progress": False},
              "ensemble": {"members": 1}},  # one model: tests/test_ensemble.py runs the default's 3
    "features": {"max_chars": 30, "window_stride": 20},
    "pretrain": {"optim": {"epochs": 1, "batch_size": 8, "progress": False}},
}


def write_pseudo_titles(project: Path) -> None:
    from jd_ner.encoder_files import texts_digest
    from jd_ner.encoding import titles_frame

    train = pd.read_parquet(newest(project / "data/03_primary", "train_titles.parquet"))

    folder = project / "data/03_primary/pseudo_titles.parquet/2020-01-01T00.00.00.000Z"
    folder.mkdir(parents=True)
    titles_frame([{"title_id": i, "text": text, "spans": spans, "line": i + 1}
                  for i, (text, spans) in enumerate([("小米手机壳", '[[0, 1, "1"]]'),
                                                     ("华为充电器", '[[0, 1, "1"]]'),
                                                     ("数据线", "[]")])]
                 ).assign(train_split=texts_digest(train["text"])).to_parquet(
        folder / "pseudo_titles.parquet")


def pretrained_weights_used(project: Path, model_dir: Path) -> bool:
    """The model started from the pretrained encoder: its vocabularies, and the weights of
    bigrams no train title has (no gradient reached them; weight decay only shrank them)."""
    import torch
    from safetensors.torch import load_file

    from jd_ner.text.vocab import bigrams

    folder = newest(project / "data/06_models", "char_encoder")
    encoder = load_file(str(folder / "encoder.safetensors"))
    pretrained = json.loads((folder / "config.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    train = pd.read_parquet(newest(project / "data/03_primary", "train_titles.parquet"))
    seen = {b for text in train["text"] for b in bigrams(text)}
    unseen = [i for i, b in enumerate(pretrained["bigram_vocab"]["tokens"])
              if i > 1 and b not in seen]
    similarity = torch.nn.functional.cosine_similarity(
        weights["encoder.bigram.0.weight"][unseen], encoder["bigram.0.weight"][unseen])
    return (config["encoder"]["init"] == "pretrained" and len(unseen) > 10
            and config["char_vocab"] == pretrained["char_vocab"]
            and bool((similarity > 0.99).all()))


def lac_weights_trained(model_dir: Path) -> bool:
    """Whether training changed the LAC weights the model started from."""
    import torch
    from safetensors.torch import load_file

    from jd_ner.lac_files import read_lac

    saved = load_file(str(model_dir / "model.safetensors"))["encoder.lac.embedding.weight"]
    return not torch.equal(saved, torch.from_numpy(read_lac().arrays["embedding"]))


def newest(folder: Path, name: str) -> Path:
    versions = sorted((folder / name).iterdir())
    return versions[-1] / name


def test_session_runs_ingest_to_submit(project, monkeypatch):
    monkeypatch.chdir(project)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=TINY_RUN) as session:
        session.run()
    data = project / "data"
    model_dir = newest(data / "06_models", "ner_model")
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
    config = json.loads((model_dir / "config.json").read_text())
    saved = config["training"]
    assert saved["trick"] == "baseline" and [r["epoch"] for r in saved["history"]] == [1]
    # the default chooses the decision threshold on dev; the summary names the model's
    assert saved["decode_threshold"]["chosen"] == config["threshold"]
    assert newest(data / "08_reporting", "learning_curve.png").stat().st_size > 0
    assert newest(data / "08_reporting", "dev_per_type.csv").is_file()
    summary = json.loads(newest(data / "08_reporting", "evaluation_summary.json").read_text())
    test_metrics = json.loads(newest(data / "08_reporting", "test_metrics.json").read_text())
    low, high = test_metrics["interval_95"]["f1"]
    assert low <= test_metrics["flat_f1"] <= high and summary["test"]["f1"] == test_metrics["flat_f1"]
    assert summary["decode_threshold"] == config["threshold"]
    titles = {name: pd.read_parquet(newest(data / "03_primary", f"{name}_titles.parquet"))
              for name in ("train", "dev", "test")}
    assert {name: len(t) for name, t in titles.items()} == {"train": 40, "dev": 5, "test": 5}
    ids = [set(t["title_id"]) for t in titles.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    submission = newest(data / "07_model_output", "submission.txt").read_text(encoding="utf-8")
    test_titles = (data / "01_raw" / "synthetic_test.txt").read_text(encoding="utf-8").splitlines()
    validate_submission(submission, test_titles)
    assert len(test_titles[-1]) > 30  # the long title went through overlapping windows
    parsed, _ = parse_bio(submission, "submission")
    assert [t.text for t in parsed] == test_titles
    assert (project / "mlflow.db").is_file()
    check_mlflow_run(project)
    for plot in ("learning_curve.png", "per_type_f1.png", "error_classes.png",
                 "confusion_matrix.png"):
        assert newest(data / "08_reporting", plot).read_bytes()[:4] == b"\x89PNG"
    errors = pd.read_csv(newest(data / "08_reporting", "errors.csv"))
    assert list(errors.columns) == ["split", "title_id", "title", "error_class", "gold_start",
                                    "gold_end", "gold_type", "gold_text", "pred_start",
                                    "pred_end", "pred_type", "pred_text", "pred_score"]
    dev_metrics = json.loads(newest(data / "08_reporting", "dev_metrics.json").read_text())
    for split, metrics in (("dev", dev_metrics), ("test", test_metrics)):
        rows = errors[errors["split"] == split]["error_class"].value_counts()
        assert {k: int(rows.get(k, 0)) for k in ("wrong_type", "wrong_boundary", "wrong_both",
                                                 "spurious", "missed")} == {
            k: metrics[f"errors_{k}"] for k in ("wrong_type", "wrong_boundary", "wrong_both",
                                                "spurious", "missed")}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("jd_ner").experiment_id])[0]
    assert {"error_classes_plot", "confusion_matrix_plot", "evaluation_errors"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)}


def test_final_fit_trains_on_every_title_and_reports_unevaluated(project, monkeypatch):
    monkeypatch.chdir(project)
    bootstrap_project(project)
    params = {**TINY_RUN, "final_fit": True, "decode": {"threshold": -1.0}}  # no dev to choose on
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run()
    data = project / "data"
    train = pd.read_parquet(newest(data / "03_primary", "train_titles.parquet"))
    assert len(train) == 50
    summary = json.loads(newest(data / "08_reporting", "evaluation_summary.json").read_text())
    assert "UNEVALUATED" in summary["note"] and summary["test"] == {"evaluated": False}
    config = json.loads((newest(data / "06_models", "ner_model") / "config.json").read_text())
    assert "unevaluated" in config["trained_on"] and config["threshold"] == -1.0
    submission = newest(data / "07_model_output", "submission.txt").read_text(encoding="utf-8")
    test_titles = (data / "01_raw" / "synthetic_test.txt").read_text(encoding="utf-8").splitlines()
    validate_submission(submission, test_titles)


def check_mlflow_run(project):
    """One MLflow run with resolved params, per-epoch metrics, provenance tags, artefacts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("jd_ner")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["run.trick"] == "baseline"
    assert run.data.params["run.optim.epochs"] == "1"
    assert "train.optim.learning_rate" in run.data.params  # the raw parameters too
    history = client.get_metric_history(run.info.run_id, "epoch/dev_f1")
    assert [m.step for m in history] == [1]
    assert {"dev_f1", "test_f1", "test_f1_low", "test_f1_high", "selection_dev_f1",
            "pretrain/train_loss"} <= set(run.data.metrics)
    # one-off numbers are tags, so the charts page holds curves
    assert not {"best_epoch", "n_parameters", "train_minutes"} & set(run.data.metrics)
    tags = run.data.tags
    assert tags["best_epoch"] == "1" and int(tags["n_parameters"]) > 0
    assert tags["seed"] == "42" and "lib.torch" in tags and len(tags["data.train_sha256"]) == 64
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"ner_model", "learning_curve_plot", "per_type_f1_plot", "dev_metrics",
            "dev_per_type", "test_metrics", "test_per_type", "evaluation_summary", "submission",
            "training_config", "ingest_report"} <= artefacts


def test_colon_and_equals_params_are_the_same():
    assert normalise_params(["trick:mixup"]) == "trick=mixup"
    assert normalise_params(["trick=mixup"]) == "trick=mixup"
    assert normalise_params(["train_file:C:/x.txt", "b=c:d"]) == "train_file=C:/x.txt,b=c:d"


def kedro(project, *args):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}
    kedro_bin = Path(sys.executable).with_name("kedro")
    return subprocess.run([str(kedro_bin), *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("syntax", ["--params=trick:mixupp", "--params=trick=rdrop+mixupp"])
@pytest.mark.parametrize("pipeline_flag", ["--pipeline=train", "--pipelines=train"])
def test_cli_accepts_both_params_syntaxes_and_lists_known_tricks(project, syntax, pipeline_flag):
    result = kedro(project, "run", pipeline_flag, syntax)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "unknown trick 'mixupp'; did you mean 'mixup'? Known tricks: " in output
    assert "baseline, boundary" in output
    assert "deprecated" not in output  # --pipeline is read as --pipelines


@pytest.mark.parametrize(("args", "message"), [
    (["--params=train.optim.epoch=1"],
     "unknown setting 'train.optim.epoch'; did you mean 'train.optim.epochs'"),
    (["--params=train_flie=x.txt"], "unknown setting 'train_flie'; did you mean 'train_file'"),
    (["--pipelines=trian"], "unknown pipeline 'trian'; did you mean 'train'"),
])
def test_a_mistyped_request_stops_before_any_node_with_a_suggestion(project, args, message):
    result = kedro(project, "run", *args)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and message in output, output[-2000:]
    assert "Traceback" not in output and "[1/" not in output  # no node ran
    assert not (project / "mlflow.db").exists() and not (project / "data/02_intermediate").exists()


def test_check_request_accepts_known_settings_and_own_presets():
    from jd_ner.cli import check_request

    parameters = {"trick": "baseline", "train": {"optim": {"epochs": 2},
                                                 "presets": {"baseline": {}, "mixup": {}}}}
    check_request(parameters, {"train_file"}, ["train"], ["train"],
                  {"train": {"optim": {"epochs": 4}, "presets": {"mine": {"optim": {"x": 1}}}},
                   "train_file": "a.txt", "trick": "baseline+mixup"})
    with pytest.raises(click.ClickException, match="Settings under train.optim: epochs"):
        check_request(parameters, set(), ["train"], [], {"train": {"optim": {"epoch": 4}}})


def test_cli_runs_with_a_colon_param_and_raw_file_paths(project, tmp_path):
    other = tmp_path / "elsewhere.txt"
    other.write_text("a B-x\nb I-x\n\nc O\nd B-y\n\ne B-x\n\n", encoding="utf-8")
    result = kedro(project, "run", "--pipeline=ingest", f"--params=train_file:{other},trick:baseline")
    assert result.returncode == 0, result.stdout + result.stderr
    report = sorted((project / "data/08_reporting/ingest_report.json").iterdir())[-1]
    assert str(other) in report.joinpath("ingest_report.json").read_text()


def test_missing_raw_file_names_the_path_and_how_to_get_it(project):
    result = kedro(project, "run", "--pipeline=ingest", "--params=train_file=nowhere/train.txt")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "nowhere/train.txt" in output and "--params=train_file=PATH" in output
    missing = project / "nowhere" / "train.txt"  # an absolute path is shown once, as given
    result = kedro(project, "run", "--pipeline=ingest", f"--params=train_file={missing}")
    output = result.stdout + result.stderr
    assert f"raw input file not found: {missing}." in output


def test_a_tagged_file_given_as_test_file_is_named_as_such(project):
    train = project / "data/01_raw/synthetic_train.txt"
    result = kedro(project, "run", "--pipelines=submit", f"--params=test_file={train}")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "this is a tagged file" in output and "give it as train_file" in output


def preset_names():
    import yaml

    params = yaml.safe_load((Path(__file__).parents[1] / "conf/base/parameters_train.yml").read_text())
    # `ensemble` saves several models: its own kedro run is in tests/test_ensemble.py
    return sorted(set(params["train"]["presets"]) - {"ensemble"})


@pytest.mark.parametrize("trick", preset_names())
def test_every_preset_trains_through_the_pipeline(project, monkeypatch, trick):
    monkeypatch.chdir(project)
    bootstrap_project(project)
    params = {**TINY_RUN, "trick": trick}
    if trick == "awp":  # attack from the first (here the only) epoch
        params["train"] = {**TINY_RUN["train"], "adversarial": {"awp_start_epoch": 1}}
    if trick == "pretrained":  # a pretrain run's encoder, which the train pipeline reuses
        with KedroSession.create(project_path=project, runtime_params=TINY_RUN) as session:
            session.run(pipeline_names=["pretrain"])
        _end_mlflow_runs()  # as separate `kedro run`s would
    if trick == "pseudo":  # titles as a pseudo_label run would have written them
        with KedroSession.create(project_path=project, runtime_params=TINY_RUN) as session:
            session.run(pipeline_names=["ingest"])  # the split they are made for
        _end_mlflow_runs()
        write_pseudo_titles(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=["train"])
    history = (project / "data/08_reporting/training_history.csv")
    import pandas as pd

    frame = pd.read_csv(sorted(history.iterdir())[-1] / "training_history.csv")
    assert len(frame) == 1 and frame["train_loss"].notna().all()
    assert all(pd.Series(frame["train_loss"]).apply(lambda v: v == v and abs(v) < float("inf")))
    config = json.loads(newest(project / "data/06_models", "training_config.json").read_text())
    assert config["trick"] == trick
    # the trick changed the computation: its loss term is in the history, or its layers are
    # in the saved model
    from safetensors import safe_open

    model_dir = newest(project / "data/06_models", "ner_model")
    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())
    row = frame.iloc[0]
    expected = {
        "baseline": lambda: row["train_loss"] == pytest.approx(row["loss_main"]),
        "rdrop": lambda: row["loss_rdrop"] > 0,
        "simcse": lambda: row["loss_simcse"] > 0,
        "boundary": lambda: row["loss_boundary"] > 0 and any(n.startswith("aux_heads.boundary")
                                                             for n in names),
        "main_entity": lambda: row["loss_main_entity"] > 0,
        "logsum": lambda: row["train_loss"] < row["loss_main"],  # sum of log L_t, log x < x
        "mixup": lambda: 0 < row["mixed"] <= 1,
        "efficient_gp": lambda: "head.bias.weight" in names,
        "gpkg": lambda: "lexicon.embedding.weight" in names,
        "layer_fusion": lambda: any(n.startswith("encoder.fusion.") for n in names),
        "pinyin_glyph": lambda: any(n.startswith("char_features.pinyin") for n in names)
        and any(n.startswith("char_features.glyph") for n in names),
        "label_smoothing": lambda: config["objective"]["label_smoothing"] > 0,
        "multisample_dropout": lambda: config["objective"]["multisample_dropout"]["enabled"],
        "pretrained": lambda: pretrained_weights_used(project, model_dir) and len({
            json.loads((v / "char_encoder/config.json").read_text())["info"]["weights_sha256"]
            for v in (project / "data/06_models/char_encoder").iterdir()}) == 1,
        "scratch": lambda: config["model"]["encoder"]["init"] == "scratch"
        and not (project / "data/06_models/char_encoder").exists(),  # nothing pretrained
        "pseudo": lambda: row["train_titles_per_s"] * row["train_seconds"] == pytest.approx(
            len(pd.read_parquet(newest(project / "data/05_model_input",
                                       "train_model_input.parquet"))) + 3),
        "lac": lambda: "encoder.lac.embedding.weight" in names and not lac_weights_trained(model_dir),
        "lac_finetune": lambda: lac_weights_trained(model_dir),
        "words": lambda: "words.embedding.weight" in names,
        "fgm": lambda: row["loss_adversarial"] > row["loss_main"] * 0.5,
        "pgd": lambda: row["loss_adversarial"] > 0,
        "awp": lambda: row["loss_adversarial"] > 0,
        # the formulas are pinned in test_contest_tricks; here: they ran through Kedro
        "ema": lambda: config["averaging"]["method"] == "ema",
        "swa": lambda: config["averaging"]["method"] == "swa",
        "no_averaging": lambda: config["averaging"]["method"] == "none",
        "single": lambda: config["ensemble"]["members"] == 1,  # (TINY_RUN's too: the
        # preset itself is checked in tests/test_ensemble.py)
    }
    assert expected[trick](), (trick, row.to_dict())


def test_pretrain_and_pseudo_label_pipelines_run_and_leave_held_out_titles_out(project, monkeypatch):
    monkeypatch.chdir(project)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=TINY_RUN) as session:
        session.run(pipeline_names=["pretrain"])
    data = project / "data"
    report = json.loads(newest(data / "08_reporting", "unlabelled_report.json").read_text())
    titles = {name: pd.read_parquet(newest(data / "03_primary", f"{name}_titles.parquet"))
              for name in ("train", "dev", "test")}
    unlabelled = pd.read_parquet(newest(data / "03_primary", "unlabelled_titles.parquet"))
    held_out = set(titles["dev"]["text"]) | set(titles["test"]["text"])
    assert not held_out & set(unlabelled["text"])
    assert set(titles["train"]["text"]) <= set(unlabelled["text"])
    assert report["titles"] == len(unlabelled) == 40 + 9
    encoder = json.loads((newest(data / "06_models", "char_encoder") / "config.json").read_text())
    assert encoder["info"]["titles"] == 49 and encoder["format"] == "jd_ner.encoder/1"
    _end_mlflow_runs()
    with KedroSession.create(project_path=project, runtime_params=TINY_RUN) as session:
        session.run(pipeline_names=["train"])
    _end_mlflow_runs()
    from jd_ner.encoder_files import texts_digest

    model = json.loads((newest(data / "06_models", "ner_model") / "config.json").read_text())
    assert model["train_split"] == texts_digest(titles["train"]["text"])  # what it learnt
    with KedroSession.create(project_path=project, runtime_params=TINY_RUN) as session:
        session.run(pipeline_names=["pseudo_label"])
    pseudo = json.loads(newest(data / "08_reporting", "pseudo_label_report.json").read_text())
    assert pseudo["candidates"] == 9  # the unlabelled file's titles; train titles are gold
    kept = pd.read_parquet(newest(data / "03_primary", "pseudo_titles.parquet"))
    assert len(kept) == pseudo["kept"]
