"""Ensembles: members' span probabilities averaged, saved and loaded as one model, trained
member by member with their own seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jd_ner.datasets import load_model, save_model
from jd_ner.modeling.ensemble import EnsembleModel, mean_probability_logit

from .conftest import tiny_config
from .test_model_io import batch_for, tiny_model
from .test_reliability import train_once


def numpy_logit_of_mean_sigmoid(scores: np.ndarray) -> np.ndarray:
    p = (1.0 / (1.0 + np.exp(-scores.astype(np.float64)))).mean(axis=0)
    return np.log(p) - np.log1p(-p)


def test_the_ensemble_score_is_the_logit_of_the_members_mean_probability():
    rng = np.random.default_rng(3)
    scores = rng.normal(0.0, 6.0, size=(3, 2, 4, 5, 5))
    got = mean_probability_logit(torch.tensor(scores, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, numpy_logit_of_mean_sigmoid(scores), rtol=1e-4, atol=1e-4)
    # where sigmoid rounds to 0 or 1 it stays exact: equal members give their own score,
    # and opposite ones cancel
    extreme = torch.tensor([[60.0, -60.0, 45.0], [60.0, -60.0, -45.0]])
    assert mean_probability_logit(extreme).tolist() == pytest.approx([60.0, -60.0, 0.0], abs=1e-4)
    # one sure member among two unsure ones: p = (1 + 0.5 + 0.5) / 3 = 2/3, logit log 2
    mixed = torch.tensor([[40.0], [0.0], [0.0]])
    assert mean_probability_logit(mixed).item() == pytest.approx(np.log(2.0), abs=1e-5)


def test_where_a_mean_probability_underflows_the_score_is_still_exact():
    # every member beyond about +-69: p (or 1 - p) is below float32's reach, so those cells
    # take the log-space form; numpy's own log-space computation in float64 is the reference
    # (last columns: strong disagreement, and all members just above the cut, near -69)
    s = np.array([[100.0, -100.0, 150.0, -150.0, 100.0, -90.0, 12.0, -30.0, 80.0, -66.0],
                  [120.0, -80.0, 150.0, -200.0, -100.0, -95.0, 11.0, -31.0, -80.0, -67.0],
                  [90.0, -110.0, 150.0, -120.0, 100.0, -100.0, 13.0, -29.0, -80.0, -68.0]])
    log_p = np.logaddexp.reduce(-np.logaddexp(0.0, -s), axis=0)
    log_q = np.logaddexp.reduce(-np.logaddexp(0.0, s), axis=0)
    got = mean_probability_logit(torch.tensor(s, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, log_p - log_q, rtol=1e-5, atol=1e-4)
    assert np.isfinite(got).all() and got[8] == pytest.approx(-np.log(2.0), abs=1e-5)


TEXTS = ["小米 手机壳 R17", "华为充电器 20W", "苹果数据线"]


def two_members():
    first = tiny_model(TEXTS).eval()
    torch.manual_seed(1)
    second = tiny_model(TEXTS).eval()
    with torch.no_grad():  # tiny_model seeds itself: give the second other weights
        for p in second.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return first, second


def test_an_ensemble_predicts_its_members_averaged_probabilities():
    first, second = two_members()
    ensemble = EnsembleModel([first, second]).eval()
    batch = batch_for(first, TEXTS)
    with torch.no_grad():
        each = np.stack([first(batch).numpy(), second(batch).numpy()])
        got = ensemble(batch).numpy()
    assert not np.allclose(each[0], each[1])
    np.testing.assert_allclose(got, numpy_logit_of_mean_sigmoid(each), rtol=1e-4, atol=1e-4)
    assert ensemble.labels == first.labels and ensemble.char_vocab is first.char_vocab


def test_an_ensemble_saves_as_one_model_folder_and_loads_without_configuration(tmp_path):
    first, second = two_members()
    ensemble = EnsembleModel([first, second], {"trick": "ensemble", "seed": 1, "history": []})
    save_model(ensemble, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "member_1", "member_2"]
    config = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    assert config["members"] == ["member_1", "member_2"] and config["training"]["seed"] == 1
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, EnsembleModel) and loaded.spec.training["trick"] == "ensemble"
    batch = batch_for(first, TEXTS)
    with torch.no_grad():
        assert torch.equal(ensemble(batch), loaded(batch))


def test_members_that_read_titles_differently_are_refused(tmp_path):
    first = tiny_model(TEXTS)
    other = tiny_model(TEXTS + ["戴尔笔记本"])  # another character vocabulary
    with pytest.raises(ValueError, match=r"member 2 reads titles differently.*char_vocab"):
        EnsembleModel([first, other])
    with pytest.raises(ValueError, match="at least 2"):
        EnsembleModel([first])


def test_training_an_ensemble_trains_each_member_as_a_run_of_its_own_seed(tiny_titles, tmp_path):
    config = tiny_config()
    config["optim"].update(epochs=1, batch_size=8, progress=False, resume="never", seed=5)
    config["ensemble"]["members"] = 2
    ensemble, history = train_once(tiny_titles, tmp_path, "ensemble", config=config)
    single_config = tiny_config()
    single_config["optim"].update(epochs=1, batch_size=8, progress=False, resume="never", seed=5)
    single, _ = train_once(tiny_titles, tmp_path, "single", config=single_config)
    assert isinstance(ensemble, EnsembleModel) and len(ensemble.members) == 2
    first, second = (m.state_dict() for m in ensemble.members)
    alone = single.state_dict()
    assert all(torch.equal(first[k], alone[k]) for k in alone)  # member 1 = the seed's model
    assert not all(torch.equal(first[k], second[k]) for k in first)
    record = ensemble.spec.training["ensemble"]
    assert [m["seed"] for m in record["members"]] == [5, 1005]
    assert 0.0 <= record["dev_f1"] <= 1.0
    assert sorted(set(history["member"])) == [1, 2] and len(history) == 2


def test_kedro_run_with_an_ensemble_evaluates_and_submits_it(project, monkeypatch):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from mlflow.tracking import MlflowClient

    from .conftest import _end_mlflow_runs
    from .test_pipeline_run import TINY_RUN, newest

    monkeypatch.chdir(project)
    bootstrap_project(project)
    params = {**TINY_RUN, "trick": "ensemble"}  # the preset: 3 members
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run()
    _end_mlflow_runs()
    data = project / "data"
    folder = newest(data / "06_models", "ner_model")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "member_1", "member_2",
                                                        "member_3"]
    assert isinstance(load_model(folder), EnsembleModel)
    assert newest(data / "07_model_output", "submission.txt").is_file()
    assert newest(data / "08_reporting", "learning_curve.png").stat().st_size > 0
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("jd_ner").experiment_id])
    members = [r for r in runs if "ensemble.member" in r.data.tags]
    parent = {r.data.tags["mlflow.parentRunId"] for r in members}
    assert sorted(r.data.tags["seed"] for r in members) == ["1042", "2042", "42"] and len(parent) == 1
    top = client.get_run(parent.pop())
    assert "test_f1" in top.data.metrics and "dev_f1" in top.data.metrics


def test_the_default_is_an_ensemble_of_three_and_single_trains_one():
    from jd_ner.config import resolve_trick

    from .conftest import base_parameters

    train = base_parameters()["train"]
    assert train["ensemble"]["members"] == 3
    assert resolve_trick("single", train)["ensemble"]["members"] == 1
    assert resolve_trick("single+ensemble", train)["ensemble"]["members"] == 3


def test_distill_trains_single_teachers_and_student_whatever_the_ensemble_setting(monkeypatch):
    import pandas as pd

    from jd_ner.pipelines.distill import nodes

    seen = []

    def fake_train(model, *args, **kwargs):
        seen.append(args[4]["ensemble"]["members"])
        raise StopIteration

    monkeypatch.setattr(nodes, "train_model", fake_train)
    config = tiny_config("ensemble")
    titles = pd.DataFrame({"title_id": [0, 1], "char_start": 0, "title_length": 1,
                           "text": ["a", "b"]})
    with pytest.raises(StopIteration):
        nodes.train_teachers(tiny_model(TEXTS), titles, titles, {}, titles.iloc[:0], config, {},
                             None, {"k": 2, "seed": 1, "folds": [[0], [1]]}, titles, {})
    with pytest.raises(StopIteration):
        nodes.train_student(tiny_model(TEXTS), titles, titles, {}, titles.iloc[:0], config, {},
                            None, pd.DataFrame(), {})
    assert seen == [1, 1] and config["ensemble"]["members"] == 3


@pytest.mark.parametrize("resume", ["auto", "required"])
def test_an_interrupted_ensemble_resumes_at_the_member_it_was_training(tiny_titles, tmp_path,
                                                                      monkeypatch, resume):
    from jd_ner.pipelines.train import nodes

    config = tiny_config()
    config["optim"].update(epochs=1, batch_size=8, progress=False, resume="auto", seed=5)
    config["ensemble"]["members"] = 2
    real, trained = nodes.train_model, []

    def member_runs(model, train_input, dev_input, folds, dev, cfg, *args, **kwargs):
        if cfg["ensemble"]["members"] == 1:  # a member (not the ensemble's own call)
            trained.append(cfg["optim"]["seed"])
            if cfg["optim"]["seed"] == 1005 and len(trained) == 2:
                raise KeyboardInterrupt
        return real(model, train_input, dev_input, folds, dev, cfg, *args, **kwargs)

    monkeypatch.setattr(nodes, "train_model", member_runs)
    with pytest.raises(KeyboardInterrupt):
        train_once(tiny_titles, tmp_path, "run", config=config)
    # `required`: member 2 never wrote a checkpoint, but the ensemble has one (member 1)
    config["optim"]["resume"] = resume
    ensemble, history = train_once(tiny_titles, tmp_path, "run", config=config)
    assert trained == [5, 1005, 1005]  # member 1 was not trained again
    single_config = tiny_config()
    single_config["optim"].update(epochs=1, batch_size=8, progress=False, resume="never", seed=5)
    single, _ = train_once(tiny_titles, tmp_path, "single", config=single_config)
    first, alone = ensemble.members[0].state_dict(), single.state_dict()
    assert all(torch.equal(first[k], alone[k]) for k in alone)
    assert sorted(set(history["member"])) == [1, 2]
    assert not any((tmp_path / "run").iterdir())  # finished members cleared with the ensemble
