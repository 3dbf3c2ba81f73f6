"""The decision threshold: chosen on dev after training, kept by the model, used wherever it
predicts."""

from __future__ import annotations

import json

import pytest

from jd_ner.config import threshold_candidates, threshold_setting
from jd_ner.datasets import load_model, save_model
from jd_ner.evaluation import choose_threshold
from jd_ner.modeling.decode import spans_above
from jd_ner.modeling.ensemble import EnsembleModel
from jd_ner.modeling.predict import predict_spans, predict_window_spans

from .conftest import DECODE, tiny_config
from .test_reliability import train_once

CHOSEN = {**DECODE, "threshold": "dev", "threshold_candidates": [-2.0, 1.0, 0.5]}


def test_the_threshold_setting_is_dev_or_a_number_and_candidates_span_from_to_by_step():
    assert threshold_setting({"threshold": "dev"}) is None
    assert threshold_setting({"threshold": -1}) == -1.0 and threshold_setting({}) == 0.0
    for bad in ("auto", True, None):
        with pytest.raises(ValueError, match="`dev` or a number"):
            threshold_setting({"threshold": bad})
    assert threshold_candidates(CHOSEN) == [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0]
    assert threshold_candidates({"threshold_candidates": [-0.3, 0.3, 0.1]}) == [
        -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3]
    for bad in ([1, 0, 0.5], [0, 1, 0], [0, 1], "x", None):
        with pytest.raises(ValueError, match="threshold_candidates"):
            threshold_candidates({"threshold_candidates": bad})


def test_the_threshold_with_the_best_dev_f1_is_chosen_overlaps_resolved_after_the_cut():
    # one type "A", one window a title. Gold: title 0 (0-1), (3-4); title 1 (0-2).
    texts = {0: "abcdef", 1: "ghijkl"}
    gold = {(0, 0, 1, "A"), (0, 3, 4, "A"), (1, 0, 2, "A")}
    windows = {0: [(0, 6, 6, [(0, 1, 0, 2.0), (3, 4, 0, -0.6), (5, 5, 0, -1.7)])],
               1: [(0, 6, 6, [(0, 2, 0, -0.3), (2, 4, 0, -1.2), (4, 5, 0, 0.4),
                              (1, 5, 0, -1.8)])]}
    # longest_first: in title 1 the long wrong (1-5) displaces every other span while it is
    # above the threshold. Counted by hand (F1 = 2 hits / (predictions + 3 gold)):
    #   -2.0: title 0 three (2 hits); title 1 (1-5) alone (0)          -> 4 pred, 2 hits
    #   -1.5: title 0 (0-1) (3-4); title 1 (0-2) (4-5), (2-4) overlaps -> 4 pred, 3 hits
    #   -1.0: the same                                                   -> 4 pred, 3 hits
    #   -0.5: title 0 (0-1); title 1 (0-2) (4-5)                       -> 3 pred, 2 hits
    #    0.0: title 0 (0-1); title 1 (4-5)                             -> 2 pred, 1 hit
    #    0.5 and 1.0: title 0 (0-1)                                    -> 1 pred, 1 hit
    # (resolving overlaps before the cut would leave title 1 empty from -1.5 on: 4/5 there)
    expected = {-2.0: 4 / 7, -1.5: 6 / 7, -1.0: 6 / 7, -0.5: 4 / 6, 0.0: 2 / 5, 0.5: 2 / 4,
                1.0: 2 / 4}
    decode = {**DECODE, "overlap": "longest_first"}
    best, f1 = choose_threshold(windows, texts, ["A"], gold, decode, threshold_candidates(CHOSEN))
    assert f1 == pytest.approx(expected)
    assert best == -1.0  # -1.5 and -1.0 tie: the one nearest 0


def test_cutting_predicted_windows_at_a_threshold_is_predicting_at_it(tiny_titles):
    from jd_ner.encoding import examples_for_model, spans_cell, titles_frame

    from .test_model_io import tiny_model

    frame = titles_frame([{"title_id": i, "text": t, "spans": spans_cell(s), "line": i + 1}
                          for i, (t, s) in enumerate(tiny_titles)])
    model = tiny_model(list(frame["text"]))
    model.spec.max_chars, model.spec.window_stride = 12, 8  # several windows a title
    examples = examples_for_model(model, frame)
    assert len(examples) > 2 * len(frame)
    windows = predict_window_spans(model, examples, threshold=-1e9)
    scores = sorted(span[3] for w in windows.values() for *_, spans in w for span in spans)
    for q in (0.5, 0.9, 0.99):  # thresholds where some cells are in and most out
        t = scores[int(q * (len(scores) - 1))]
        direct = predict_spans(model, examples, threshold=t)
        assert spans_above(windows, t) == direct and any(direct.values())
    model.spec.threshold = scores[len(scores) // 2]  # None: the model's own threshold
    assert predict_spans(model, examples) == predict_spans(model, examples,
                                                           threshold=model.spec.threshold)


def independent_f1_at(model, dev_titles, threshold) -> float:
    """Flat F1 of predicting dev at ``threshold``, through the evaluate pipeline's nodes."""
    from jd_ner.pipelines.evaluate.nodes import score_titles

    from .conftest import base_parameters

    kept, model.spec.threshold = model.spec.threshold, threshold
    try:
        from jd_ner.pipelines.evaluate.nodes import predict_titles

        pred = predict_titles(model, dev_titles, base_parameters()["evaluate"], progress=False)
    finally:
        model.spec.threshold = kept
    return score_titles(pred, dev_titles, DECODE, base_parameters()["evaluate"])[0]["flat_f1"]


def dev_titles_of(tiny_titles):
    from jd_ner.encoding import spans_cell, titles_frame

    frame = titles_frame([{"title_id": i, "text": t, "spans": spans_cell(s), "line": i + 1}
                          for i, (t, s) in enumerate(tiny_titles)])
    return frame.iloc[50:].reset_index(drop=True)  # train_once's dev split


def test_training_chooses_the_threshold_on_dev_and_the_saved_model_keeps_it(tiny_titles,
                                                                              tmp_path):
    config = tiny_config()
    config["optim"].update(epochs=3, batch_size=8, progress=False, resume="never", seed=3)
    model, history = train_once(tiny_titles, tmp_path, "dev", config=config, decode=CHOSEN)
    dev = dev_titles_of(tiny_titles)
    candidates = threshold_candidates(CHOSEN)
    f1 = {t: independent_f1_at(model, dev, t) for t in candidates}
    assert history["dev_f1"].max() == pytest.approx(f1[0.0])  # the epoch was selected at 0
    assert len(set(f1.values())) > 1  # the choice matters on this model
    assert model.spec.threshold == max(candidates, key=lambda t: (f1[t], -abs(t)))
    record = model.spec.training["decode_threshold"]
    assert record["chosen"] == model.spec.threshold
    assert [t for t, _ in record["dev_f1"]] == candidates
    assert [v for _, v in record["dev_f1"]] == pytest.approx([f1[t] for t in candidates])
    save_model(model, tmp_path / "m")
    assert load_model(tmp_path / "m").spec.threshold == model.spec.threshold

    fixed = {**CHOSEN, "threshold": 0.5}  # a number: kept as it is, and selects the epochs
    model, history = train_once(tiny_titles, tmp_path, "fixed", config=config, decode=fixed)
    assert model.spec.threshold == 0.5 and "decode_threshold" not in model.spec.training
    best = history.loc[history["dev_f1"].idxmax()]
    assert best["dev_f1"] == pytest.approx(independent_f1_at(model, dev, 0.5))


def test_an_ensemble_chooses_its_own_threshold_over_its_members_chosen_ones(tiny_titles,
                                                                           tmp_path):
    config = tiny_config()
    config["optim"].update(epochs=4, batch_size=8, progress=False, resume="never", seed=4)
    config["ensemble"]["members"] = 2
    decode = {**CHOSEN, "threshold_candidates": [-0.5, 0.5, 0.1]}  # a tiny model's scores
    ensemble, _ = train_once(tiny_titles, tmp_path, "ensemble", config=config, decode=decode)
    assert isinstance(ensemble, EnsembleModel)
    dev = dev_titles_of(tiny_titles)
    candidates = threshold_candidates(decode)
    for model in (ensemble, *ensemble.members):
        f1 = {t: independent_f1_at(model, dev, t) for t in candidates}
        assert model.spec.threshold == max(candidates, key=lambda t: (f1[t], -abs(t)))
    assert ensemble.spec.threshold != 0.0  # (so that the choice was made, not left at 0)
    records = ensemble.spec.training["ensemble"]["members"]
    assert [r["threshold"] for r in records] == [m.spec.threshold for m in ensemble.members]
    save_model(ensemble, tmp_path / "e")
    config_json = json.loads((tmp_path / "e" / "config.json").read_text(encoding="utf-8"))
    assert config_json["threshold"] == ensemble.spec.threshold
    loaded = load_model(tmp_path / "e")
    assert loaded.spec.threshold == ensemble.spec.threshold
    assert [m.spec.threshold for m in loaded.members] == [m.spec.threshold
                                                         for m in ensemble.members]
    # members that chose different thresholds still form an ensemble
    ensemble.members[1].spec.threshold = ensemble.members[0].spec.threshold + 1.0
    EnsembleModel(list(ensemble.members))


def test_final_fit_refuses_dev_and_bad_candidates_fail_before_any_training(tiny_titles, tmp_path,
                                                                           monkeypatch):
    from jd_ner.pipelines.train import nodes

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the settings were checked")

    monkeypatch.setattr(nodes, "fit", no_training)
    config = tiny_config()
    config["optim"].update(epochs=1, batch_size=8, progress=False, resume="never")
    with pytest.raises(ValueError, match="final_fit has no dev split.*decode.threshold="):
        train_once(tiny_titles, tmp_path, "final", config=config, decode=CHOSEN, final_fit=True)
    for name, members in (("single", 1), ("ensemble", 2)):
        config["ensemble"]["members"] = members
        with pytest.raises(ValueError, match="threshold_candidates"):
            train_once(tiny_titles, tmp_path, name, config=config,
                       decode={**CHOSEN, "threshold_candidates": [1.0, -1.0, 0.5]})
    with pytest.raises(AssertionError, match="trained before"):  # a number needs no candidates
        train_once(tiny_titles, tmp_path, "fixed", config=config,
                   decode={**DECODE, "threshold": -1.0}, final_fit=True)


def test_models_saved_before_thresholds_existed_load_with_threshold_0(tmp_path):
    from .test_ensemble import two_members

    first, second = two_members()
    first.spec.threshold = second.spec.threshold = -1.0
    ensemble = EnsembleModel([first, second], threshold=-0.5)
    save_model(first, tmp_path / "single")
    save_model(ensemble, tmp_path / "ensemble")
    assert load_model(tmp_path / "single").spec.threshold == -1.0
    assert load_model(tmp_path / "ensemble").spec.threshold == -0.5
    for config in (tmp_path / "single/config.json", tmp_path / "ensemble/config.json",
                   *(tmp_path / "ensemble").glob("member_*/config.json")):
        data = json.loads(config.read_text(encoding="utf-8"))
        del data["threshold"]
        config.write_text(json.dumps(data), encoding="utf-8")
    assert load_model(tmp_path / "single").spec.threshold == 0.0
    loaded = load_model(tmp_path / "ensemble")
    assert [m.spec.threshold for m in (loaded, *loaded.members)] == [0.0, 0.0, 0.0]


def test_the_cut_compares_float32_scores_with_the_threshold_as_prediction_does():
    import torch

    # 0.1 is not a float32: prediction compares a float32 score with it rounded to float32, so
    # a score equal to float32(0.1) is not above 0.1 there, though above it as a double
    score = torch.tensor(0.1, dtype=torch.float32)
    assert not bool(score > 0.1) and score.item() > 0.1
    windows = {0: [(0, 4, 4, [(0, 1, 0, score.item()), (2, 3, 0, 0.5)])]}
    assert spans_above(windows, 0.1) == {0: [(2, 3, 0, 0.5)]}


def test_run_keys_hold_the_threshold_training_selects_at_not_the_candidates():
    from jd_ner.pipelines.train.nodes import selecting

    # `dev` trains (selects epochs) at 0; the candidates only matter after training
    same = [CHOSEN, {**CHOSEN, "threshold": 0.0},
            {**CHOSEN, "threshold_candidates": [-1.0, 1.0, 0.5]}]
    assert all(selecting(d) == selecting(CHOSEN) for d in same)
    assert selecting({**CHOSEN, "threshold": 0.5}) != selecting(CHOSEN)
    assert selecting({**CHOSEN, "overlap": "first_come"}) != selecting(CHOSEN)
