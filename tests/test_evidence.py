"""Numbers that can be trusted: the held-out test split, its intervals, and the review's
defects (each test here failed on the code before its fix)."""

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch

from jd_ner.encoding import encode_titles, spans_cell, titles_frame
from jd_ner.evaluation import bootstrap_interval, per_title_counts
from jd_ner.modeling.decode import clean_whitespace, decode_title, merge_windows
from jd_ner.modeling.device import autocast_dtype
from jd_ner.modeling.heads import valid_cells
from jd_ner.modeling.losses import gp_divergence, rdrop_loss
from jd_ner.pipelines.evaluate import nodes as evaluate
from jd_ner.pipelines.features import nodes as features
from jd_ner.pipelines.ingest.nodes import split_titles
from jd_ner.pipelines.train.nodes import run_key, train_lexicon_table
from jd_ner.text.lexicon import LexiconMatcher
from jd_ner.text.vocab import build_bigram_vocab, build_char_vocab

from .conftest import DECODE, tiny_config, tiny_features


def frame(rows):
    return titles_frame([{"title_id": i, "text": t, "spans": spans_cell(s), "line": i + 1}
                         for i, (t, s) in enumerate(rows)])


# --- the three-way split ---------------------------------------------------------------------

def test_split_is_three_way_disjoint_seeded_and_sized():
    titles = frame([(f"标题{i}", []) for i in range(100)])
    params = {"dev_fraction": 0.1, "test_fraction": 0.2, "split_seed": 3}
    train, dev, test = split_titles(titles, params)
    assert (len(train), len(dev), len(test)) == (70, 10, 20)
    ids = [set(f["title_id"]) for f in (train, dev, test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == set(range(100))
    again = split_titles(titles, params)
    assert all(a.equals(b) for a, b in zip((train, dev, test), again, strict=True))
    other = split_titles(titles, {**params, "split_seed": 4})
    assert set(other[2]["title_id"]) != ids[2]
    with pytest.raises(ValueError, match="leave titles to train"):
        split_titles(titles, {**params, "dev_fraction": 0.5, "test_fraction": 0.5})


def test_final_fit_puts_every_title_in_train_and_nothing_is_scored():
    titles = frame([(f"标题{i}", []) for i in range(10)])
    train, dev, test = split_titles(titles, {"dev_fraction": 0.1, "test_fraction": 0.1,
                                             "split_seed": 3}, final_fit=True)
    assert len(train) == 10 and dev.empty and test.empty
    metrics, per_type = evaluate.score_titles(evaluate.predict_titles(None, test, {}), test, DECODE,
                                              {"bootstrap_samples": 10, "bootstrap_seed": 0})
    assert metrics["evaluated"] is False and per_type.empty


def test_final_fit_training_keeps_the_last_epoch_and_marks_the_model(tiny_titles, tmp_path):
    from .test_reliability import train_once

    config = tiny_config()
    config["optim"].update(epochs=2, batch_size=8, progress=False, resume="never")
    model, history = train_once(tiny_titles, tmp_path, "final", config=config, final_fit=True)
    assert "unevaluated" in model.spec.trained_on
    assert list(history["epoch"]) == [1, 2] and "dev_f1" not in history
    empty = {"evaluated": False, "titles": 0}
    summary = evaluate.summarise_evaluation(empty, empty, model)
    assert "UNEVALUATED" in summary["note"]


# --- bootstrap intervals ---------------------------------------------------------------------

def test_bootstrap_interval_matches_a_plain_loop_over_resamples():
    rng = random.Random(0)
    counts = np.array([[rng.randint(0, 3), 0, 0] for _ in range(40)])
    counts[:, 1] = counts[:, 0] + [rng.randint(0, 2) for _ in range(40)]
    counts[:, 2] = counts[:, 0] + [rng.randint(0, 2) for _ in range(40)]
    got = bootstrap_interval(counts, samples=300, seed=5)
    draws = np.random.default_rng(5).integers(0, 40, size=(300, 40))
    f1s, ps = [], []
    for row in draws:
        tp = sum(counts[i][0] for i in row)
        n_pred = sum(counts[i][1] for i in row)
        n_gold = sum(counts[i][2] for i in row)
        f1s.append(2 * tp / (n_pred + n_gold))
        ps.append(tp / n_pred)
    assert got["f1"] == pytest.approx((np.quantile(f1s, 0.025), np.quantile(f1s, 0.975)))
    assert got["precision"] == pytest.approx((np.quantile(ps, 0.025), np.quantile(ps, 0.975)))
    tp, n_pred, n_gold = counts.sum(axis=0)
    assert got["f1"][0] < 2 * tp / (n_pred + n_gold) < got["f1"][1]


def test_per_title_counts_and_score_node_interval():
    gold = {(0, 0, 1, "a"), (1, 2, 3, "b"), (1, 5, 5, "a")}
    pred = {(0, 0, 1, "a"), (1, 2, 3, "a"), (2, 0, 0, "b")}
    counts = per_title_counts(pred, gold, [0, 1, 2])
    assert counts.tolist() == [[1, 1, 1], [0, 1, 2], [0, 1, 0]]
    identical = np.array([[2, 2, 2]] * 30)  # every title perfect: a degenerate interval
    assert bootstrap_interval(identical, 50, 0)["f1"] == (1.0, 1.0)


# --- defect 1: the GPKG lexicon must not encode the train split with its own labels ------------

def test_train_titles_are_matched_against_an_out_of_fold_lexicon():
    rows = [("独有品牌手机", [(0, 3, "1")]),          # a string only this title has
            ("小米手机", [(0, 1, "1")]), ("小米耳机", [(0, 1, "1")]), ("小米电池", [(0, 1, "1")]),
            ("华为手机", [(0, 1, "1")]), ("华为耳机", [(0, 1, "1")])]
    train = frame(rows)
    params = {**tiny_features(), "lexicon_folds": 3, "lexicon_fold_seed": 1}
    folds = features.build_entity_lexicon_folds(train, params)
    assert sorted(t for f in folds["folds"] for t in f["title_ids"]) == list(range(6))
    for fold in folds["folds"]:  # each fold's lexicon comes from the other folds only
        own = {train["text"][t][s:e + 1] for t in fold["title_ids"]
               for s, e, _ in features.spans_of(train["spans"][t])}
        others = {train["text"][t][s:e + 1] for t in set(range(6)) - set(fold["title_ids"])
                  for s, e, _ in features.spans_of(train["spans"][t])}
        assert set(fold["lexicon"]) == others and not (own - others) & set(fold["lexicon"])
    config = tiny_config("gpkg")
    schema = features.build_label_schema(train, train.iloc[:0], train.iloc[:0])
    cv = features.build_char_vocabulary(train, None, params)
    bv = features.build_bigram_vocabulary(train, params)
    from jd_ner.pipelines.train.nodes import build_model

    model = build_model(config, cv, bv, {}, {}, features.build_entity_lexicon(train, params),
                        schema, params, None)
    encoded = features.encode_split(train, cv, bv, schema, params)
    oof = train_lexicon_table(model, encoded, folds)["lexicon_ids"]
    full = [model.lexicon_matcher.features(text, 4) for text in encoded["text"]]
    assert any(full[0][0]) and not any(any(ids) for ids in oof[0][:4])  # 独有品牌: own title only
    shared = [any(oof[k][0]) for k in range(1, 6)]  # 小米/华为 appear in other folds too
    assert sum(shared) >= 3


# --- defect 2 and 3: R-Drop in the write-up's units, no NaN gradients --------------------------

def test_rdrop_is_alpha_over_four_times_the_mean_over_samples_and_types():
    torch.manual_seed(0)
    b, t, n = 2, 3, 5
    s, u = torch.randn(b, t, n, n) * 2, torch.randn(b, t, n, n) * 2
    mask = torch.tensor([[False, True, True, True, False], [False, True, True, False, False]])
    valid = valid_cells(mask)

    def sig(x):
        return 1 / (1 + math.exp(-x))

    per = []  # brute force: D(s,u)+D(u,s) per (sample, type), summing its valid cells
    for i in range(b):
        for k in range(t):
            d = 0.0
            for r in range(n):
                for c in range(n):
                    if valid[i, 0, r, c]:
                        x, y = s[i, k, r, c].item(), u[i, k, r, c].item()
                        d += 2 * (sig(x) - sig(y)) * (x - y)
            per.append(d)
    expected = 0.7 / 4 * sum(per) / len(per)
    assert rdrop_loss(s, u, valid, 0.7).item() == pytest.approx(expected, rel=1e-5)
    assert gp_divergence(s, u, valid).shape == (b, t)


# --- defect 4: evaluate reads titles with the model's own vocabularies --------------------------

def test_evaluation_encodes_with_the_models_vocabularies_not_the_features():
    from kedro.pipeline import Pipeline  # noqa: F401  (the evaluate pipeline is wired with it)

    from jd_ner.pipelines.evaluate.pipeline import create_pipeline

    for node in create_pipeline().nodes:
        if node.name.startswith("predict_"):
            assert set(node.inputs) == {"ner_model", node.name.removeprefix("predict_") + "_titles",
                                        "params:evaluate"}
    from .test_model_io import tiny_model

    texts = ["小米手机壳", "小米充电器", "华为手机壳"]
    model = tiny_model(texts).eval()  # bigrams seen once are in the model's vocabulary
    titles = frame([(t, []) for t in texts])
    other_bigrams = build_bigram_vocab(texts, 2)  # what features with min_count 2 would build
    assert len(other_bigrams) != len(model.bigram_vocab)
    pred = evaluate.predict_titles(model, titles, {"batch_size": 8, "device": "cpu", "amp": False})
    from jd_ner.encoding import examples_for_model
    from jd_ner.modeling.predict import predict_spans

    own = predict_spans(model, examples_for_model(model, titles), 8, "cpu")
    assert [[v for *_, v in own[i]] for i in range(3)] == list(map(list, pred["scores"]))


# --- defect 5: an entity exactly filling the window overlap ------------------------------------

def test_entity_that_exactly_fills_the_overlap_survives_window_merging():
    # 200 characters, windows 0..125 and 96..199: (96, 125) is held whole by both, touching
    # window 0's right cut and window 96's left cut.
    merged = merge_windows([(0, 126, 200, [(96, 125, 3, 1.0)]),
                            (96, 104, 200, [(0, 29, 3, 2.0)])])
    assert merged == [(96, 125, 3, 2.0)]
    # a span cut by window 0's edge whose right window sees it longer is still dropped
    cut = merge_windows([(0, 126, 200, [(110, 125, 1, 1.0)]),
                         (96, 104, 200, [(14, 35, 1, 1.0)])])
    assert cut == [(110, 131, 1, 1.0)]


# --- defect 6: lexicon features per character keep the most informative ------------------------

def test_lexicon_keeps_longest_then_most_frequent_matches_per_character():
    entries = {"手机": {"1": 1, "2": 9}, "小米手机": {"3": 2}, "米手": {"0": 50}}
    matcher = LexiconMatcher(entries, ["0", "1", "2", "3"])
    feats = matcher.features("小米手机", per_char=2)
    b = {k: 1 + 2 * k for k in range(4)}
    i = {k: 2 + 2 * k for k in range(4)}
    assert feats[0] == [b[3], 0]
    assert feats[1] == [i[3], b[0]]   # the 4-char match first, then the 2-char one
    assert feats[2] == [i[3], i[0]]   # among 2-char matches, 米手 (seen 50 times) first
    assert feats[3] == [i[3], i[2]]   # 手机 as type 2 (9 times) before type 1 (once)
    assert matcher.features("小米手机", per_char=5)[2] == [i[3], i[0], b[2], b[1], 0]


# --- defect 7: precision honours `amp`; scores are not rounded before decoding ------------------

def test_autocast_follows_amp_and_device(monkeypatch):
    import jd_ner.modeling.device as device

    assert autocast_dtype(torch.device("cuda"), False) is None
    assert autocast_dtype(torch.device("cpu"), False) is None
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype(torch.device("cpu"), True) is torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype(torch.device("cpu"), True) is None  # emulated bf16 would be slower
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype(torch.device("cuda"), True) is torch.float16
    monkeypatch.undo()
    if torch.cuda.is_available():
        assert autocast_dtype(torch.device("cuda"), True) in (torch.bfloat16, torch.float16)


def test_predict_node_passes_amp_and_keeps_full_precision_scores(monkeypatch):
    seen = {}

    def fake_predict(model, examples, batch_size, device, progress, amp):
        seen["amp"] = amp
        return {0: [(0, 1, 0, 0.123456789)]}

    monkeypatch.setattr(evaluate, "predict_spans", fake_predict)
    monkeypatch.setattr(evaluate, "examples_for_model", lambda m, t: [])

    class Model:
        labels = ["4"]

    titles = frame([("小米手机", [])])
    out = evaluate.predict_titles(Model(), titles, {"batch_size": 4, "device": "cpu", "amp": False})
    assert seen["amp"] is False and out["scores"][0] == [0.123456789]


# --- defect 8: labels come from the train split only -------------------------------------------

def test_label_schema_from_train_only_and_unseen_types_reported():
    train = frame([("小米手机", [(0, 1, "1")])])
    dev = frame([("华为手机", [(0, 1, "1"), (2, 3, "9")])])
    test = frame([("苹果手机", [(2, 3, "9"), (0, 1, "7")])])
    schema = features.build_label_schema(train, dev, test)
    assert schema["labels"] == ["1"]
    assert schema["unseen_in_train"] == {"dev": {"9": 1}, "test": {"7": 1, "9": 1}}
    encoded = encode_titles(dev, build_char_vocab(["华为手机"]), None, schema["labels"], 30, 20)
    assert encoded["spans"][0] == "[[0, 1, 0]]"  # the unknown type is no training target


# --- defect 9: predicted spans do not start or end on whitespace ------------------------------

def test_whitespace_edges_are_trimmed_or_dropped():
    text = "小米 手机 "
    spans = [(0, 2, 0, 1.0), (2, 5, 1, 2.0), (2, 2, 0, 0.5), (3, 4, 1, 0.2), (0, 1, 0, 0.1)]
    assert clean_whitespace(spans, text, "trim") == [(0, 1, 0, 1.0), (3, 4, 1, 2.0)]
    assert clean_whitespace(spans, text, "drop") == [(0, 1, 0, 0.1), (3, 4, 1, 0.2)]
    assert clean_whitespace(spans, text, "keep") == spans
    assert decode_title(spans, text, DECODE) == [(0, 1, 0, 1.0), (3, 4, 1, 2.0)]
    with pytest.raises(ValueError, match="whitespace"):
        clean_whitespace(spans, text, "strip")


# --- defect 10: decoding settings are part of the resume key -------------------------------------

def test_run_key_changes_with_decoding_settings():
    config = tiny_config()
    frames = [pd.DataFrame({"a": [1, 2]})]
    key = run_key(config, frames, {"spec": 1}, DECODE)
    assert run_key(config, frames, {"spec": 1}, {**DECODE, "overlap": "first_come"}) != key
    assert run_key(config, frames, {"spec": 1}, {**DECODE, "whitespace": "keep"}) != key
    assert run_key(config, frames, {"spec": 1}, DECODE) == key
