"""The write-up's architecture and feature tricks: lexicon, pinyin/glyph, layer fusion,
log-sum weighting, auxiliary heads, Efficient GP."""

import json

import pytest
import torch

from jd_ner.encoding import examples_for_model, spans_cell, titles_frame
from jd_ner.modeling.decode import spans_from_scores
from jd_ner.modeling.feature_layers import LayerFusion
from jd_ner.modeling.heads import EfficientGlobalPointer, GlobalPointer
from jd_ner.modeling.tricks import Objective, combine_tasks
from jd_ner.pipelines.features import nodes as features
from jd_ner.text.char_features import glyph_components, pinyin_sequences
from jd_ner.text.lexicon import LexiconMatcher, select_entries
from jd_ner.text.vocab import Vocab

from .conftest import tiny_features


def frame(rows):
    return titles_frame([{"title_id": i, "text": t, "spans": spans_cell(s), "line": i + 1}
                         for i, (t, s) in enumerate(rows)])


def test_lexicon_holds_train_strings_only():
    both = [(0, 1, "1"), (2, 4, "4")]
    train = frame([("小米手机壳", both), ("华为手机壳", both)])
    dev = frame([("苹果数据线", both), ("小米数据线", both)])

    def strings(titles):
        return {t[s : e + 1] for t, c in zip(titles["text"], titles["spans"], strict=True)
                for s, e, _ in json.loads(c)}

    lexicon = features.build_entity_lexicon(train, tiny_features())
    assert set(lexicon) <= strings(train)
    assert not (strings(dev) - strings(train)) & set(lexicon)  # 苹果, 数据线 stay out
    assert "小米" in lexicon
    assert lexicon["手机壳"] == {"4": 2}


def test_lexicon_modes_and_matches():
    lexicon = {"苹果": {"1": 5, "4": 2}, "手机壳": {"4": 2}, "保温杯": {"4": 9}}
    assert select_entries(lexicon, "all")["苹果"] == {"1": 5, "4": 2}
    assert select_entries(lexicon, "top1")["苹果"] == {"1": 5}
    assert select_entries(lexicon, "rare_single", rare_max_count=3) == {"手机壳": {"4": 2}}
    matcher = LexiconMatcher(select_entries(lexicon, "all"), ["1", "4"])
    feats = matcher.features("苹果手机壳x", per_char=3)
    b1, i1, b4, i4 = 1, 2, 3, 4  # 1 + 2k (B) and 2 + 2k (I) for type index k
    assert feats[0] == [b1, b4, 0] and feats[1] == [i1, i4, 0]
    assert feats[2] == [b4, 0, 0] and feats[4] == [i4, 0, 0] and feats[5] == [0, 0, 0]


def test_known_title_pinyin_and_glyph_ids():
    assert pinyin_sequences("重庆重量a") == [list("chong2"), list("qing4"), list("zhong4"),
                                          list("liang4"), ["[NONE]"]]
    assert glyph_components("好", max_depth=1) == ("女", "子")
    assert glyph_components("蝶", max_depth=1) == ("虫", "枼")
    assert glyph_components("蝶", max_depth=2) == ("虫", "枼", "口", "厶", "世", "木")
    assert glyph_components("A") == ("[NONE]",)
    train = frame([("好蝶", [])])
    params = {**tiny_features(), "glyph_depth": 2, "glyph_length": 5, "pinyin_length": 6}
    encoded = features.encode_split(train, features.build_char_vocabulary(train, None, params),
                                    features.build_bigram_vocabulary(train, params),
                                    {"labels": ["4"]}, params)
    glyph_vocab = Vocab.from_dict(features.build_glyph_vocabulary(train, params))
    ids = features.encode_glyphs(encoded, glyph_vocab.to_dict(), params)["glyph_ids"][0]
    pad = glyph_vocab.id_of("pad")
    g = glyph_vocab.index
    assert [list(x) for x in ids] == [
        [g["女"], g["子"], g["𠃊"], g["一"], g["丿"]],   # cut to 5 of 女 子 𠃊 一 丿 了 一
        [g["虫"], g["枼"], g["口"], g["厶"], g["世"]]]
    assert pad not in ids[0]
    pinyin_vocab = Vocab.from_dict(features.build_pinyin_vocabulary(train))
    ids = features.encode_pinyin(encoded, pinyin_vocab.to_dict(), params)["pinyin_ids"][0]
    assert [pinyin_vocab.tokens[i] for i in ids[0]] == list("hao3") + ["[PAD]"] * 2


def test_layer_fusion_with_one_hot_weights_picks_that_layer():
    torch.manual_seed(0)
    layers = [torch.randn(2, 5, 8) for _ in range(4)]
    fusion = LayerFusion(8, k=3)
    for j in range(3):
        with torch.no_grad():
            for i, scorer in enumerate(fusion.scorers):
                scorer.weight.zero_()
                scorer.bias.fill_(60.0 if i == j else -60.0)
        assert torch.allclose(fusion(layers), layers[1 + j], atol=1e-6)
    mean = LayerFusion(8, k=2, mode="mean")
    assert torch.allclose(mean(layers), (layers[2] + layers[3]) / 2)


def test_logsum_with_one_task_is_the_log_of_its_loss():
    loss = torch.tensor(0.37, requires_grad=True)
    total = combine_tasks({"main": loss}, {"main": 1.0}, "logsum", 1e-7)
    assert total.item() == pytest.approx(torch.log(torch.tensor(0.37)).item())
    total.backward()
    assert loss.grad.item() == pytest.approx(1 / 0.37)  # the 1/L weighting
    tiny = torch.tensor(1e-12)
    assert combine_tasks({"main": tiny}, {"main": 1.0}, "logsum", 1e-7).item() == pytest.approx(
        torch.log(torch.tensor(1e-7)).item())
    both = combine_tasks({"main": torch.tensor(2.0), "boundary": torch.tensor(3.0)},
                         {"main": 1.0, "boundary": 0.5}, "sum", 1e-7)
    assert both.item() == pytest.approx(3.5)


def test_auxiliary_targets():
    labels = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    labels[0, 0, 1, 2] = True
    labels[0, 2, 2, 3] = True
    objective = Objective({"boundary": {"enabled": True}, "main_entity": {"enabled": True}},
                          main_type_index=2)
    aux = objective.aux_labels(labels)
    assert aux["boundary"].shape == (1, 1, 4, 4) and aux["boundary"].sum() == 2
    assert torch.equal(aux["main_entity"][0, 0], labels[0, 2])


def test_gp_and_efficient_gp_decode_alike():
    mask = torch.tensor([[False, True, True, True, False]])
    for head in (GlobalPointer(8, 3, 4), EfficientGlobalPointer(8, 3, 4)):
        scores = head(torch.randn(1, 5, 8))
        assert scores.shape == (1, 3, 5, 5)
        spans = spans_from_scores(scores, mask)[0]
        assert all(0 <= s <= e <= 2 and 0 <= t < 3 for s, e, t, _ in spans)
    egp, gp = EfficientGlobalPointer(256, 51, 32), GlobalPointer(256, 51, 32)
    assert sum(p.numel() for p in egp.parameters()) < sum(p.numel() for p in gp.parameters()) / 10


def test_prediction_reads_titles_exactly_as_training_did(tiny_titles, tmp_path):
    """The model's own encoding (evaluate, submit) equals the features pipeline's tables."""
    from .test_reliability import train_once

    model, _ = train_once(tiny_titles, tmp_path, "x", trick="gpkg+pinyin_glyph")
    assert model.sequence_fields == ("pinyin_ids", "glyph_ids", "lexicon_ids")
    dev = frame(tiny_titles[50:])
    params = tiny_features()
    encoded = features.encode_split(dev, model.spec.char_vocab, model.spec.bigram_vocab,
                                    {"labels": model.labels}, params)
    pinyin = features.encode_pinyin(encoded, model.spec.pinyin_vocab, params)
    glyph = features.encode_glyphs(encoded, model.spec.glyph_vocab, params)
    mine = examples_for_model(model, dev)
    assert [e.pinyin_ids for e in mine] == [tuple(map(tuple, x)) for x in pinyin["pinyin_ids"]]
    assert [e.glyph_ids for e in mine] == [tuple(map(tuple, x)) for x in glyph["glyph_ids"]]
    assert any(any(any(row) for row in e.lexicon_ids) for e in mine)
