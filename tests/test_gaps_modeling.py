"""Model wiring and training-loop behaviour checked against independent computations.

Closes gaps a mutation run left open: the encoder honours its config and the attention mask,
the optional feature layers (bigrams, layer fusion, BiLSTM, pinyin/glyph CNNs, lexicon) are
built when configured and reach the scores, the objective's terms enter the total with the
documented weights and signs, and ``fit``'s parameter groups, schedule and bookkeeping.
"""

import math
import random
import time

import numpy as np
import pytest
import torch
from torch import nn

from jd_ner.modeling.batching import Example
from jd_ner.modeling.encoder import CharEncoder, EncoderConfig
from jd_ner.modeling.feature_layers import CNNSequenceEncoder, LexiconEmbedding
from jd_ner.modeling.heads import EfficientGlobalPointer, GlobalPointer, valid_cells
from jd_ner.modeling.model import HeadConfig, ModelSpec, NerModel
from jd_ner.modeling.predict import predict_spans
from jd_ner.modeling.training import (
    TrainConfig,
    _is_oom,
    _param_groups,
    fit,
    linear_schedule,
    planned_epochs,
    resolve_device,
    seed_everything,
)
from jd_ner.modeling.tricks import Mixer, Objective, build_objective
from jd_ner.text.char_features import SEQ_SPECIALS
from jd_ner.text.vocab import (
    Vocab,
    build_bigram_vocab,
    build_char_vocab,
    encode_bigrams,
    encode_chars,
)

from .conftest import TINY_MODEL
from .test_model_io import batch_for, tiny_model

TEXTS = ["小米手机壳", "华为充电器", "ab12c"]


# --------------------------------------------------------------------------- references

def brute_gp_loss(scores, labels, valid):
    """Multilabel CE per (sample, type), mean; plain Python over cells."""
    total, count = 0.0, 0
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            cells = zip(scores[i, j].flatten().tolist(), labels[i, j].flatten().tolist(),
                        valid[i, 0].flatten().tolist(), strict=True)
            neg = pos = 0.0
            for s, y, v in cells:
                if v and y:
                    pos += math.exp(-s)
                elif v:
                    neg += math.exp(s)
            total += math.log1p(neg) + math.log1p(pos)
            count += 1
    return total / count


def brute_soft_loss(scores, labels, valid, eps):
    total, count = 0.0, 0
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            neg = pos = 0.0
            for s, y, v in zip(scores[i, j].flatten().tolist(), labels[i, j].flatten().tolist(),
                               valid[i, 0].flatten().tolist(), strict=True):
                if v:
                    p = (1 - eps) * y + eps / 2
                    neg += (1 - p) * math.exp(s)
                    pos += p * math.exp(-s)
            total += math.log1p(neg) + math.log1p(pos)
            count += 1
    return total / count


def brute_divergence_mean(s, t, valid):
    """mean over (sample, type) of sum over valid cells of (sig(s)-sig(t))(s-t), twice."""
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    vals = []
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            d = 0.0
            for a, b, v in zip(s[i, j].flatten().tolist(), t[i, j].flatten().tolist(),
                               valid[i, 0].flatten().tolist(), strict=True):
                if v:
                    d += 2 * (sig(a) - sig(b)) * (a - b)  # D(s,t) + D(t,s)
            vals.append(d)
    return sum(vals) / len(vals)


def labelled_batch(model, texts):
    batch = batch_for(model, texts)
    length = batch["input_ids"].shape[1]
    labels = torch.zeros(len(texts), len(model.labels), length, length, dtype=torch.bool)
    labels[0, 0, 1, 2] = True
    labels[0, 1, 3, 5] = True
    labels[1, 1, 2, 2] = True
    labels[2, 0, 1, 4] = True
    batch["labels"] = labels
    return batch


def seq_vocab(n):
    return Vocab(list(SEQ_SPECIALS.values()) + [f"t{i}" for i in range(n)], dict(SEQ_SPECIALS)).to_dict()


CNN = {"embedding_dim": 4, "filters": 3, "kernels": [2, 3]}


def feature_model(pinyin=True, glyph=True, lexicon=True, head=None, **spec):
    cv, bv = build_char_vocab(TEXTS), build_bigram_vocab(TEXTS, 1)
    lex = {"entries": {"小米": {"1": 2}, "手机壳": {"4": 1}}, "per_char": 2, "mode": "all"} \
        if lexicon else None
    spec = ModelSpec(labels=["1", "4"], char_vocab=cv.to_dict(), bigram_vocab=bv.to_dict(),
                     encoder=EncoderConfig(**TINY_MODEL["encoder"]),
                     head=head or HeadConfig(**TINY_MODEL["head"]), max_chars=30, window_stride=20,
                     pinyin=dict(CNN) if pinyin else None, glyph=dict(CNN) if glyph else None,
                     pinyin_vocab=seq_vocab(6) if pinyin else None,
                     glyph_vocab=seq_vocab(9) if glyph else None, lexicon=lex, **spec)
    torch.manual_seed(0)
    return NerModel(spec).eval()


def feature_batch(model, texts=TEXTS, seed=1):
    batch = batch_for(model, texts)
    b, length = batch["input_ids"].shape
    g = torch.Generator().manual_seed(seed)
    if model.spec.pinyin:
        batch["pinyin_ids"] = torch.randint(1, 9, (b, length, 4), generator=g)
    if model.spec.glyph:
        batch["glyph_ids"] = torch.randint(1, 12, (b, length, 3), generator=g)
    if model.spec.lexicon:
        batch["lexicon_ids"] = torch.randint(0, 5, (b, length, 2), generator=g)
    return batch


# --------------------------------------------------------------------------- encoder

def test_encoder_honours_its_config():
    cfg = EncoderConfig(hidden_size=24, num_layers=3, num_heads=3, intermediate_size=40,
                        dropout=0.2, max_positions=50, bigram_dim=8, lstm_hidden=5,
                        lstm_layers=2, fusion_layers=2, fusion="mean")
    enc = CharEncoder(cfg, vocab_size=37, pad_id=3, bigram_vocab_size=11)
    hf = enc.transformer.config
    assert (hf.vocab_size, hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads,
            hf.intermediate_size, hf.max_position_embeddings, hf.pad_token_id) == (
        37, 24, 3, 3, 40, 50, 3)
    assert hf.hidden_dropout_prob == 0.2 and hf.attention_probs_dropout_prob == 0.2
    emb = enc.transformer.embeddings
    assert tuple(emb.word_embeddings.weight.shape) == (37, 24) and emb.word_embeddings.padding_idx == 3
    assert emb.position_embeddings.num_embeddings == 50 and emb.dropout.p == 0.2
    assert len(enc.transformer.encoder.layer) == 3
    assert enc.transformer.encoder.layer[0].intermediate.dense.out_features == 40
    assert enc.num_hidden_layers == 3
    # bigrams: Embedding(11, 8, padding_idx=0) projected to the width without bias
    embedding, project = enc.bigram
    assert (embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx) == (11, 8, 0)
    assert (project.in_features, project.out_features, project.bias) == (8, 24, None)
    # BiLSTM: 2 layers, 5 per direction, second layer reads both directions
    assert len(enc.lstm.layers) == 2
    for i, layer in enumerate(enc.lstm.layers):
        for direction in ("ltr", "rtl"):
            lstm = layer[direction]
            assert (lstm.input_size, lstm.hidden_size, lstm.bidirectional) == (
                24 if i == 0 else 10, 5, False)
    assert enc.output_size == 10 and enc.lstm_dropout.p == 0.2
    assert enc.fusion.k == 2 and enc.fusion.mode == "mean"

    plain = CharEncoder(EncoderConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=8),
                        vocab_size=9, pad_id=0)
    assert plain.bigram is None and plain.lstm is None and plain.fusion is None
    assert plain.output_size == 16
    ids = torch.tensor([[2, 5, 6, 3, 0]])
    h, layers = plain(ids, torch.tensor([[1, 1, 1, 1, 0]]))
    assert h.shape == (1, 5, 16) and layers is None


def test_encoder_without_a_bigram_vocabulary_refuses_bigram_embeddings():
    cfg = EncoderConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=8, bigram_dim=4)
    with pytest.raises(ValueError, match="bigram"):
        CharEncoder(cfg, vocab_size=9, pad_id=0)
    with pytest.raises(ValueError, match="bigram"):
        CharEncoder(cfg, vocab_size=9, pad_id=0, bigram_vocab_size=0)
    assert CharEncoder(cfg, vocab_size=9, pad_id=0, bigram_vocab_size=1).bigram is not None


def test_model_without_bigrams_or_lstm_builds_and_runs():
    cv = build_char_vocab(TEXTS)
    enc = {**TINY_MODEL["encoder"], "bigram_dim": 0, "lstm_hidden": 0}
    model = NerModel(ModelSpec(labels=["1", "4"], char_vocab=cv.to_dict(), encoder=EncoderConfig(**enc),
                               head=HeadConfig(kind="gp", head_size=8, rope=False)))
    assert model.bigram_vocab is None and model.encoder.bigram is None
    assert model.encoder.output_size == 32 and model.head.rope is False
    assert model.char_features is None and model.lexicon is None and len(model.aux_heads) == 0
    assert model.encoder.transformer.embeddings.word_embeddings.padding_idx == cv.id_of("pad")
    from jd_ner.modeling.batching import Collator

    examples = [Example(i, 0, len(t), tuple(encode_chars(cv, t))) for i, t in enumerate(TEXTS)]
    batch = Collator(cv.id_of("pad"), cv.id_of("cls"), cv.id_of("sep"), 2, False)(examples, False)
    assert "bigram_ids" not in batch
    assert model.eval()(batch).shape == (3, 2, 7, 7)


def test_input_embeddings_add_the_projected_bigram_embeddings():
    model = tiny_model(TEXTS).eval()
    batch = batch_for(model, TEXTS)
    enc = model.encoder
    words = enc.transformer.embeddings.word_embeddings.weight
    table, proj = enc.bigram[0].weight, enc.bigram[1].weight
    expected = words[batch["input_ids"]] + table[batch["bigram_ids"]] @ proj.T
    got = enc.embed(batch["input_ids"], batch["bigram_ids"])
    assert torch.allclose(got, expected, atol=1e-6)
    with torch.no_grad():
        base = model(batch)
        other = dict(batch, bigram_ids=batch["bigram_ids"].roll(1, dims=1))
        assert not torch.allclose(model(other), base)


def test_padding_does_not_change_a_titles_scores():
    """The attention mask reaches the transformer and the BiLSTM reads real lengths only."""
    model = tiny_model(TEXTS + ["一个长得多的标题用来填充"]).eval()
    short, long = "华为", "一个长得多的标题用来填充"
    with torch.no_grad():
        alone = model(batch_for(model, [short]))
        padded = model(batch_for(model, [short, long]))
    n = len(short) + 2
    assert padded.shape[-1] > n
    assert torch.allclose(alone[0], padded[0, :, :n, :n], atol=1e-5)


def test_layer_fusion_in_the_encoder_is_the_softmax_mix_of_the_last_layers():
    cfg = EncoderConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=8, dropout=0.0,
                        fusion_layers=2, fusion="softmax")  # fuses every state: embeddings + 1 layer
    torch.manual_seed(3)
    enc = CharEncoder(cfg, vocab_size=12, pad_id=0).eval()
    with torch.no_grad():
        for scorer in enc.fusion.scorers:
            scorer.weight.normal_(0, 1.0)
            scorer.bias.normal_(0, 1.0)
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        embeds = enc.embed(ids)
        states = enc.transformer(inputs_embeds=embeds, attention_mask=mask,
                                 output_hidden_states=True).hidden_states
        assert len(states) == 2
        last = states[-2:]
        logits = torch.stack([(h * s.weight[0]).sum(-1) + s.bias[0]
                              for h, s in zip(last, enc.fusion.scorers, strict=True)], dim=-1)
        w = logits.exp() / logits.exp().sum(-1, keepdim=True)
        expected = w[..., 0:1] * last[0] + w[..., 1:2] * last[1]
        got, layers = enc.encode(embeds, mask)
        assert layers is None
        assert torch.allclose(got, expected, atol=1e-5)
        assert not torch.allclose(got, states[-1], atol=1e-3)
        _, all_layers = enc.encode(embeds, mask, all_layers=True)
        assert len(all_layers) == 2


def test_encoder_bilstm_equals_a_packed_lstm_over_the_transformer_output():
    cfg = EncoderConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=8, dropout=0.0,
                        lstm_hidden=6)
    torch.manual_seed(4)
    enc = CharEncoder(cfg, vocab_size=12, pad_id=0).eval()
    ref = nn.LSTM(16, 6, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ref, name).copy_(getattr(enc.lstm.layers[0]["ltr"], name))
            getattr(ref, name + "_reverse").copy_(getattr(enc.lstm.layers[0]["rtl"], name))
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        embeds = enc.embed(ids)
        h = enc.transformer(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        packed = nn.utils.rnn.pack_padded_sequence(h, mask.sum(-1), batch_first=True,
                                                   enforce_sorted=False)
        expected = nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True,
                                                    total_length=5)[0]
        got, _ = enc.encode(embeds, mask)
    assert got.shape == (2, 5, 12)
    assert torch.allclose(got, expected, atol=1e-5)


# --------------------------------------------------------------------------- model features

def test_model_builds_pinyin_glyph_lexicon_and_aux_heads_as_specified():
    model = feature_model(aux_heads={"boundary": None, "main_entity": "4"})
    cf = model.char_features
    assert cf.pinyin.embedding.num_embeddings == 9 and cf.glyph.embedding.num_embeddings == 12
    assert cf.pinyin.kernels == (2, 3) and cf.pinyin.output_size == 6
    assert cf.project.in_features == 32 + 12 and cf.project.out_features == 32
    assert model.lexicon.embedding.num_embeddings == 5 and model.lexicon.embedding.embedding_dim == 32
    assert model.lexicon_matcher.features("小米手机壳", 2)[0] == [1, 0]
    assert model.sequence_fields == ("pinyin_ids", "glyph_ids", "lexicon_ids")
    assert set(model.aux_heads) == {"boundary", "main_entity"}
    for head in model.aux_heads.values():
        assert isinstance(head, GlobalPointer)
        assert (head.num_types, head.head_size, head.rope) == (1, 8, True)
        assert head.dense.in_features == 32
    assert model.head.num_types == 2 and model.head.rope is True
    egp = feature_model(False, False, False, head=HeadConfig(kind="efficient_gp", head_size=4, rope=False),
                        aux_heads={"boundary": None})
    assert isinstance(egp.aux_heads["boundary"], EfficientGlobalPointer)
    assert (egp.aux_heads["boundary"].num_types, egp.aux_heads["boundary"].head_size) == (1, 4)
    assert egp.aux_heads["boundary"].rope is False and egp.head.rope is False


@pytest.mark.parametrize("field", ["pinyin_ids", "glyph_ids", "lexicon_ids"])
def test_each_enabled_feature_changes_the_scores(field):
    model = feature_model()
    batch = feature_batch(model)
    with torch.no_grad():
        base = model(batch)
        changed = dict(batch)
        changed[field] = batch[field].clone()
        changed[field][0, 2] = (batch[field][0, 2] % 3) + 1
        assert not torch.allclose(model(changed)[0], base[0])
        assert torch.allclose(model(changed)[1:], base[1:], atol=1e-6)


@pytest.mark.parametrize("pinyin, glyph", [(True, False), (False, True)])
def test_pinyin_only_or_glyph_only_models_use_their_feature(pinyin, glyph):
    model = feature_model(pinyin=pinyin, glyph=glyph, lexicon=False)
    cf = model.char_features
    assert (cf.pinyin is not None, cf.glyph is not None) == (pinyin, glyph)
    assert cf.project.in_features == 32 + 6
    field = "pinyin_ids" if pinyin else "glyph_ids"
    assert model.sequence_fields == (field,)
    batch = feature_batch(model)
    with torch.no_grad():
        base = model(batch)
        changed = dict(batch, **{field: batch[field].flip(-1)})
        assert not torch.allclose(model(changed), base)


def test_features_are_encoder_plus_lexicon_then_projected_with_char_vectors():
    model = feature_model()
    batch = feature_batch(model)
    lex = model.lexicon.embedding.weight
    cf = model.char_features
    with torch.no_grad():
        h, _ = model.encoder(batch["input_ids"], batch["attention_mask"], batch["bigram_ids"])
        ids = batch["lexicon_ids"]
        h = h + lex[ids[..., 0]] + lex[ids[..., 1]]
        vec = torch.cat([cf.pinyin(batch["pinyin_ids"]), cf.glyph(batch["glyph_ids"])], dim=-1)
        expected = torch.cat([h, vec], dim=-1) @ cf.project.weight.T + cf.project.bias
        assert torch.allclose(model.features(batch), expected, atol=1e-5)
        assert torch.allclose(model(batch), model.head(expected), atol=1e-5)


def test_mixup_at_the_embeddings_mixes_lexicon_and_char_vectors_too():
    model = feature_model()
    batch = feature_batch(model)
    perm, lam = torch.tensor([2, 0, 1]), 0.3
    lex = model.lexicon.embedding.weight
    cf, enc = model.char_features, model.encoder

    def mix(x):
        return lam * x + (1 - lam) * x[perm]

    with torch.no_grad():
        embeds = mix(enc.embed(batch["input_ids"], batch["bigram_ids"]))
        mask = torch.maximum(batch["attention_mask"], batch["attention_mask"][perm])
        h, _ = enc.encode(embeds, mask)
        h = h + mix(lex[batch["lexicon_ids"]].sum(2))
        vec = mix(torch.cat([cf.pinyin(batch["pinyin_ids"]), cf.glyph(batch["glyph_ids"])], dim=-1))
        expected = torch.cat([h, vec], dim=-1) @ cf.project.weight.T + cf.project.bias
        got = model.features(batch, Mixer(lam, perm, "embeddings"))
    assert torch.allclose(got, expected, atol=1e-5)


def test_lexicon_embedding_sums_per_position_and_ignores_id_zero():
    torch.manual_seed(0)
    layer = LexiconEmbedding(5, 3)
    assert torch.equal(layer(torch.zeros(2, 4, 3, dtype=torch.long)), torch.zeros(2, 4, 3))
    ids = torch.tensor([[[1, 2], [3, 0], [0, 0]], [[4, 4], [2, 1], [1, 0]]])
    w = layer.embedding.weight.detach()
    out = layer(ids)
    assert out.shape == (2, 3, 3)
    for b in range(2):
        for i in range(3):
            expected = sum((w[k] for k in ids[b, i].tolist() if k), torch.zeros(3))
            assert torch.allclose(out[b, i], expected, atol=1e-6)
    out.sum().backward()
    assert torch.equal(layer.embedding.weight.grad[0], torch.zeros(3))


# --------------------------------------------------------------------------- objective

def test_label_smoothing_through_the_objective_is_the_soft_label_loss_of_the_scores():
    model = tiny_model(TEXTS).eval()
    batch = labelled_batch(model, TEXTS)
    with torch.no_grad():
        scores = model(batch)
        loss, parts = Objective({"label_smoothing": 0.2})(model, batch)
    valid = valid_cells(batch["char_mask"])
    expected = brute_soft_loss(scores, batch["labels"], valid, 0.2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts["loss_main"].item() == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(brute_gp_loss(scores, batch["labels"], valid), rel=1e-3)
    with pytest.raises(ValueError, match="label_smoothing"):
        Objective({"label_smoothing": 1.0})


def aux_model():
    cv, bv = build_char_vocab(TEXTS), build_bigram_vocab(TEXTS, 1)
    spec = ModelSpec(labels=["1", "4", "7"], char_vocab=cv.to_dict(), bigram_vocab=bv.to_dict(),
                     encoder=EncoderConfig(**TINY_MODEL["encoder"]),
                     head=HeadConfig(**TINY_MODEL["head"]),
                     aux_heads={"boundary": None, "main_entity": "4"})
    torch.manual_seed(0)
    return NerModel(spec).eval()


def test_auxiliary_losses_are_weighted_into_the_total_and_logsum_adds_logs():
    model = aux_model()
    batch = labelled_batch(model, TEXTS)
    batch["labels"][2, 2, 2, 3] = True
    cfg = {"boundary": {"enabled": True, "weight": 0.3},
           "main_entity": {"enabled": True, "type": "4", "weight": 0.7}}
    objective = build_objective(cfg, model)
    assert objective.main_type_index == 1
    with torch.no_grad():
        loss, parts = objective(model, batch)
        h = model.features(batch)
        main_s, b_s, m_s = model.head(h), model.aux_heads["boundary"](h), model.aux_heads["main_entity"](h)
    labels, valid = batch["labels"], valid_cells(batch["char_mask"])
    main = brute_gp_loss(main_s, labels, valid)
    boundary = brute_gp_loss(b_s, labels[:, 0:1] | labels[:, 1:2] | labels[:, 2:3], valid)
    main_entity = brute_gp_loss(m_s, labels[:, 1:2], valid)
    assert parts["loss_main"].item() == pytest.approx(main, rel=1e-5)
    assert parts["loss_boundary"].item() == pytest.approx(boundary, rel=1e-5)
    assert parts["loss_main_entity"].item() == pytest.approx(main_entity, rel=1e-5)
    assert loss.item() == pytest.approx(main + 0.3 * boundary + 0.7 * main_entity, rel=1e-5)
    logsum = build_objective({**cfg, "weighting": "logsum"}, model)
    with torch.no_grad():
        loss, _ = logsum(model, batch)
    assert loss.item() == pytest.approx(math.log(main) + math.log(boundary) + math.log(main_entity),
                                        rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="main_entity"):
        build_objective({"main_entity": {"enabled": True}}, tiny_model(TEXTS))


def record_head_and_features(model, monkeypatch):
    seen = {"scores": [], "features": []}
    head, features = model.head, model.features

    class Recorder(nn.Module):
        def forward(self, h):
            out = head(h)
            seen["scores"].append(out.detach().clone())
            return out

    model.head = Recorder()
    monkeypatch.setattr(model, "features", lambda b, m=None: seen["features"].append(
        features(b, m)) or seen["features"][-1])
    return seen


def test_rdrop_term_is_added_with_alpha_over_four(monkeypatch):
    model = tiny_model(TEXTS).train()
    batch = labelled_batch(model, TEXTS)
    seen = record_head_and_features(model, monkeypatch)
    torch.manual_seed(0)
    loss, parts = Objective({"rdrop": {"enabled": True, "alpha": 40.0}})(model, batch)
    (scores,) = seen["scores"]
    s, t = scores[:3], scores[3:]
    valid = valid_cells(batch["char_mask"])
    reg = 40.0 / 4 * brute_divergence_mean(s, t, valid)
    main = brute_gp_loss(scores, torch.cat([batch["labels"]] * 2), torch.cat([valid] * 2))
    assert reg > 1e-3
    assert parts["loss_rdrop"].item() == pytest.approx(reg, rel=1e-4)
    assert loss.item() == pytest.approx(main + reg, rel=1e-5)


def test_simcse_term_is_added_with_its_weight(monkeypatch):
    model = tiny_model(TEXTS).train()
    batch = labelled_batch(model, TEXTS)
    seen = record_head_and_features(model, monkeypatch)
    torch.manual_seed(0)
    cfg = {"simcse": {"enabled": True, "weight": 0.4, "temperature": 0.5, "pooling": "mean"}}
    loss, parts = Objective(cfg)(model, batch)
    h = seen["features"][0].detach()
    mask = torch.cat([batch["char_mask"]] * 2)
    z = [(h[i][mask[i]]).mean(0) for i in range(6)]
    z = [v / v.norm() for v in z]
    info = 0.0
    for i in range(6):
        partner = (i + 3) % 6
        others = [math.exp(float(z[i] @ z[j]) / 0.5) for j in range(6) if j != i]
        info += -math.log(math.exp(float(z[i] @ z[partner]) / 0.5) / sum(others))
    reg = 0.4 * info / 6
    (scores,) = seen["scores"]
    valid = valid_cells(batch["char_mask"])
    main = brute_gp_loss(scores, torch.cat([batch["labels"]] * 2), torch.cat([valid] * 2))
    assert parts["loss_simcse"].item() == pytest.approx(reg, rel=1e-4)
    assert loss.item() == pytest.approx(main + reg, rel=1e-5)
    # cls pooling reads position 0 instead
    cls = Objective({"simcse": {**cfg["simcse"], "pooling": "cls"}})
    torch.manual_seed(0)
    _, cls_parts = cls(model, batch)
    assert cls_parts["loss_simcse"].item() != pytest.approx(reg, rel=1e-3)


def test_objective_settings_are_checked():
    with pytest.raises(ValueError, match="rdrop"):
        Objective({"rdrop": {"alhpa": 1.0}})
    assert Objective({"multisample_dropout": {"samples": 1}}).cfg["multisample_dropout"]["samples"] == 1
    with pytest.raises(ValueError):
        Objective({"multisample_dropout": {"samples": 0}})
    assert build_objective({"rdrop": {"enabled": True}}, tiny_model(TEXTS)).cfg["rdrop"]["enabled"]


def test_mixer_sampling_draws_a_lambda_and_a_permutation_with_its_probability():
    objective = Objective({"mixup": {"enabled": True, "probability": 1.0, "alpha": 0.5,
                                     "layer": "embeddings"}})
    torch.manual_seed(0)
    lams = []
    for _ in range(20):
        mixer = objective.sample_mixer(5, 1, "cpu")
        assert sorted(mixer.perm.tolist()) == [0, 1, 2, 3, 4] and mixer.layer == "embeddings"
        lams.append(mixer.lam)
    assert all(0 < v < 1 for v in lams) and len(set(lams)) == 20
    assert objective.sample_mixer(1, 1, "cpu") is None
    assert objective.sample_mixer(2, 1, "cpu") is not None
    never = Objective({"mixup": {"enabled": True, "probability": 0.0}})
    assert all(never.sample_mixer(4, 1, "cpu") is None for _ in range(10))
    half = Objective({"mixup": {"enabled": True, "probability": 0.5}})
    torch.manual_seed(1)
    drawn = sum(half.sample_mixer(4, 1, "cpu") is not None for _ in range(200))
    assert 60 < drawn < 140
    assert Mixer(0.3, torch.tensor([1, 0]), "encoder")(torch.tensor([1.0, 3.0])).tolist() == \
        pytest.approx([0.3 * 1 + 0.7 * 3, 0.3 * 3 + 0.7 * 1])


# --------------------------------------------------------------------------- training

def test_param_groups_encoder_lr_and_weight_decay_exclusions():
    model = aux_model()
    cfg = TrainConfig(learning_rate=1e-3, encoder_learning_rate=1e-4, weight_decay=0.05)
    groups = _param_groups(model, cfg)
    assert all(set(g) == {"params", "lr", "weight_decay"} for g in groups)
    where = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(where) == len(names)
    for name, p in names.items():
        lr = 1e-4 if name.startswith("encoder.transformer.") else 1e-3
        wd = 0.0 if p.dim() == 1 or "LayerNorm" in name else 0.05
        assert where[id(p)] == (lr, wd), name
    # the cases that matter are present
    assert where[id(names["encoder.bigram.0.weight"])] == (1e-3, 0.05)
    assert where[id(names["encoder.transformer.embeddings.LayerNorm.weight"])] == (1e-4, 0.0)
    assert where[id(names["head.dense.bias"])] == (1e-3, 0.0)
    same = _param_groups(model, TrainConfig(learning_rate=2e-3, weight_decay=0.1))
    assert sorted((g["lr"], g["weight_decay"]) for g in same) == [(2e-3, 0.0), (2e-3, 0.1)]


def test_linear_schedule_warms_up_then_decays_to_zero():
    f = linear_schedule(10, 0.2)  # warm-up 2 steps, then 8 steps of decay
    assert [f(s) for s in range(11)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0])
    g = linear_schedule(10, 0.0)  # at least one warm-up step
    assert [g(s) for s in (0, 1, 5, 10)] == pytest.approx([1.0, 1.0, 5 / 9, 0.0])
    assert [linear_schedule(2, 0.5)(s) for s in (0, 1, 2)] == pytest.approx([1.0, 1.0, 0.0])
    assert linear_schedule(4, 1.0)(3) == pytest.approx(1.0)
    assert linear_schedule(4, 1.0)(4) == pytest.approx(0.0)


def small_examples(model, n=5):
    texts = ["小米", "华为充", "ab12c", "手机壳子", "充电器 2"][:n]
    return [Example(i, 0, len(t), tuple(encode_chars(model.char_vocab, t)),
                    tuple(encode_bigrams(model.bigram_vocab, t))) for i, t in enumerate(texts)]


def test_fit_uses_every_batch_logs_losses_and_keeps_the_earlier_of_tied_epochs():
    model = tiny_model(["小米华为充ab12c手机壳子充电器 2"])
    train = small_examples(model)
    firsts = {}  # epoch -> first character ids of the titles seen
    epoch = [1]

    def objective(m, batch):
        firsts.setdefault(epoch[0], []).extend(batch["input_ids"][:, 1].tolist())
        dummy = sum(p.sum() for p in m.head.parameters()) * 0.0
        return dummy + 2.5, {"part": torch.tensor(0.75)}

    snapshots, records, scores = [], [], iter([0.2, 0.4, 0.4])

    def evaluate(m):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"dev_f1": next(scores)}

    def on_epoch_end(record):
        records.append(record)
        epoch[0] += 1

    cfg = TrainConfig(epochs=3, batch_size=2, learning_rate=1e-3, warmup_ratio=0.1, amp=False,
                      progress=False, device="cpu", seed=3)
    steps = []
    begin = time.perf_counter()
    result = fit(model, train, cfg, objective, evaluate, on_epoch_end,
                 on_step=lambda step, loss: steps.append((step, loss)))
    wall = time.perf_counter() - begin
    assert steps == [(k, pytest.approx(2.5)) for k in range(1, 10)]
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert records == result.history
    expected_first = sorted(e.char_ids[0] for e in train)
    assert [sorted(firsts[e]) for e in (1, 2, 3)] == [expected_first] * 3  # every title, once
    for r in result.history:
        assert r["train_loss"] == pytest.approx(2.5) and r["part"] == pytest.approx(0.75)
        assert 0 < r["train_seconds"] < wall and 0 <= r["eval_seconds"] < wall
        assert r["train_titles_per_s"] == pytest.approx(5 / r["train_seconds"])
    # 3 steps per epoch, 9 in all, warm-up 1 step: lr factor after step k is (9 - k) / 8
    assert [r["lr"] for r in result.history] == pytest.approx([1e-3 * 6 / 8, 1e-3 * 3 / 8, 0.0])
    assert (result.best_epoch, result.best_score) == (2, 0.4)
    final = model.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)


def test_patience_stops_the_run_and_auto_epochs_plan_a_step_budget():
    model = tiny_model(["小米华为充ab12c手机壳子充电器 2"])
    train = small_examples(model)  # 5 titles, batches of 2: 3 steps an epoch

    def objective(m, batch):
        return (m.head.dense.weight ** 2).sum(), {}

    scores = iter([0.2, 0.5, 0.4, 0.5, 0.3, 0.9, 0.9, 0.9, 0.9, 0.9])
    cfg = TrainConfig(epochs=10, patience=2, batch_size=2, learning_rate=1e-3, warmup_ratio=0.1,
                      amp=False, progress=False, device="cpu")
    result = fit(model, train, cfg, objective, lambda m: {"dev_f1": next(scores)})
    # best at epoch 2; epochs 3 and 4 are not better (a tie is not better): stop after 4
    assert (result.best_epoch, len(result.history), result.stopped_early) == (2, 4, True)
    assert result.planned_epochs == 10  # the schedule still spans 30 steps: after 12, 18/27
    assert result.history[-1]["lr"] == pytest.approx(1e-3 * 18 / 27)
    scores = iter([0.2, 0.5, 0.4, 0.3])  # the last planned epoch is no reason to "stop early"
    result = fit(model, train, TrainConfig(epochs=4, patience=2, batch_size=2, amp=False,
                                           progress=False, device="cpu"),
                 objective, lambda m: {"dev_f1": next(scores)})
    assert (len(result.history), result.stopped_early) == (4, False)
    never = TrainConfig(epochs=3, patience=0, batch_size=2, amp=False, progress=False, device="cpu")
    assert len(fit(model, train, never, objective, lambda m: {"dev_f1": 0.1}).history) == 3
    assert planned_epochs(TrainConfig(epochs="auto", auto_steps=7, max_epochs=9), 3) == 3
    assert planned_epochs(TrainConfig(epochs="auto", auto_steps=3400, max_epochs=60), 245) == 14
    assert planned_epochs(TrainConfig(epochs="auto", auto_steps=3400, max_epochs=60), 10) == 60
    assert planned_epochs(TrainConfig(epochs=5, auto_steps=7), 3) == 5
    with pytest.raises(ValueError, match="number or 'auto'"):
        planned_epochs(TrainConfig(epochs="many"), 3)


def test_fit_without_evaluation_keeps_the_last_epoch_and_sets_threads():
    model = tiny_model(["小米华为充ab12c手机壳子充电器 2"])
    train = small_examples(model, 3)
    calls = []

    def objective(m, batch):
        calls.append(batch["input_ids"].shape[0])
        return (m.head.dense.weight ** 2).sum(), {}

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        result = fit(model, train, TrainConfig(epochs=2, batch_size=2, amp=False, progress=False,
                                               device="cpu", threads=1), objective, None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert sorted(calls) == [1, 1, 2, 2]  # 2 epochs of batches of 2 and 1
    assert result.best_epoch == 2 and result.best_score == float("-inf")
    assert len(result.history) == 2 and "eval_seconds" not in result.history[0]
    with pytest.raises(ValueError, match="no training examples"):
        fit(model, [], TrainConfig(progress=False), objective, None)


def test_fit_applies_weight_updates_so_the_loss_falls():
    model = tiny_model(["小米华为充ab12c手机壳子充电器 2"])
    train = small_examples(model, 4)

    def objective(m, batch):
        loss = (m.head.dense.weight ** 2).sum()
        return loss, {}

    start = float((model.head.dense.weight.detach() ** 2).sum())
    result = fit(model, train, TrainConfig(epochs=2, batch_size=2, learning_rate=0.05, weight_decay=0.0,
                                           warmup_ratio=0.0, amp=False, progress=False,
                                           device="cpu"), objective, None)
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"] < start


def test_out_of_memory_is_recognised_by_message():
    assert _is_oom(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert _is_oom(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried"))
    assert _is_oom(RuntimeError("Out Of Memory"))
    assert not _is_oom(RuntimeError("shape mismatch"))


def test_seed_and_device_helpers():
    seed_everything(11)
    a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    seed_everything(11)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == a
    seed_everything(12)
    assert random.random() != a[0]
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_fit_batch_order_follows_the_seed():
    def order(seed):
        model = tiny_model(["小米华为充ab12c手机壳子充电器 2"])
        seen = []

        def objective(m, batch):
            seen.append(tuple(batch["input_ids"][:, 1].tolist()))
            return (m.head.dense.weight ** 2).sum() * 0.0, {}

        fit(model, small_examples(model), TrainConfig(epochs=2, batch_size=2, amp=False, progress=False,
                                                      device="cpu", seed=seed), objective, None)
        return seen

    first = order(3)
    assert order(3) == first
    assert any(order(s) != first for s in (4, 5, 6))


def test_cnn_features_of_sequences_shorter_than_the_widest_kernel():
    torch.manual_seed(5)
    enc = CNNSequenceEncoder(vocab_size=6, embedding_dim=3, filters=2, kernels=(2, 3))
    assert torch.equal(enc.embedding.weight[0], torch.zeros(3))
    ids = torch.tensor([[[1, 4], [5, 0]], [[2, 2], [3, 1]]])  # (B=2, L=2, S=2 < 3)
    out = enc(ids)
    assert out.shape == (2, 2, 4)
    emb = enc.embedding.weight.detach()
    for b in range(2):
        for pos in range(2):
            seq = [emb[i] for i in ids[b, pos].tolist()] + [torch.zeros(3)]  # padded with id 0
            expected = []
            for conv in enc.convs:
                k = conv.kernel_size[0]
                for f in range(conv.out_channels):
                    values = [sum(float((conv.weight[f, :, j].detach() * seq[s + j]).sum()) for j in range(k))
                              + float(conv.bias[f].detach()) for s in range(len(seq) - k + 1)]
                    expected.append(max(0.0, max(values)))
            assert out[b, pos].tolist() == pytest.approx(expected, abs=1e-5)


def test_prediction_returns_every_title_even_the_shortest():
    model = tiny_model(TEXTS + ["x"])
    examples = small_examples(model) + [Example(9, 0, 1, (model.char_vocab.lookup("x"),),
                                                (model.bigram_vocab.lookup("x</s>"),))]
    out = predict_spans(model, examples, batch_size=2, threshold=-1e9)
    assert sorted(out) == [0, 1, 2, 3, 4, 9]
    assert [span[:3] for span in out[9]] == [(0, 0, 0), (0, 0, 1)]
    assert all(len(out[e.title_id]) == 2 * len(e) * (len(e) + 1) // 2 for e in examples)


def test_cpu_bf16_detection_reads_the_cpu_capabilities(monkeypatch):
    from jd_ner.modeling import device

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert device.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert device.cpu_has_native_bf16() is True
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert device.cpu_has_native_bf16() is True
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert device.cpu_has_native_bf16() is False


def test_rope_tables_match_the_formula_at_far_positions():
    from jd_ner.modeling.heads import rope_tables

    cos, sin = rope_tables(64, 16)
    assert cos.shape == (64, 16) and cos.dtype == torch.float32
    for p in (0, 1, 37, 63):
        for m in range(8):
            angle = p * 10000.0 ** (-2 * m / 16)
            for col in (2 * m, 2 * m + 1):  # both members of a pair share the angle
                assert float(cos[p, col]) == pytest.approx(math.cos(angle), abs=2e-6)
                assert float(sin[p, col]) == pytest.approx(math.sin(angle), abs=2e-6)
    with pytest.raises(ValueError, match="even"):
        rope_tables(4, 5)


def test_multisample_dropout_returns_the_first_samples_scores_to_rdrop(monkeypatch):
    model = tiny_model(TEXTS).train()
    batch = labelled_batch(model, TEXTS)
    seen = record_head_and_features(model, monkeypatch)
    torch.manual_seed(0)
    cfg = {"rdrop": {"enabled": True, "alpha": 40.0},
           "multisample_dropout": {"enabled": True, "samples": 2, "p": 0.5}}
    _, parts = Objective(cfg)(model, batch)
    first, second = seen["scores"]
    valid = valid_cells(batch["char_mask"])
    expected = 10.0 * brute_divergence_mean(first[:3], first[3:], valid)
    other = 10.0 * brute_divergence_mean(second[:3], second[3:], valid)
    assert parts["loss_rdrop"].item() == pytest.approx(expected, rel=1e-4)
    assert expected != pytest.approx(other, rel=1e-2)


class MemoryCheckpoints:
    """The Checkpoints protocol in memory, through torch.save/load(weights_only=True) as on disk."""

    def __init__(self, every):
        self.every, self.blob, self.saves, self.cleared = every, None, [], False

    def load(self):
        import io

        return None if self.blob is None else torch.load(io.BytesIO(self.blob), weights_only=True)

    def save(self, state):
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        self.blob = buf.getvalue()
        self.saves.append((state["epoch"], state["next_batch"]))

    def clear(self):
        self.blob, self.cleared = None, True


class Interrupted(Exception):
    pass


def test_fit_interrupted_and_resumed_from_checkpoints_equals_an_uninterrupted_run():
    timing = {"train_seconds", "train_titles_per_s", "eval_seconds"}
    cfg = TrainConfig(epochs=3, batch_size=2, learning_rate=5e-3, amp=False, progress=False,
                      device="cpu", seed=7)

    def run(checkpoints, stop_at=None):
        model = tiny_model(["小米华为充ab12c手机壳子充电器 2"])
        train = small_examples(model)
        calls = [0]
        plain = Objective({})
        init = model.head.dense.weight.detach().clone()

        def objective(m, batch):
            calls[0] += 1
            if calls[0] == stop_at:
                raise Interrupted
            return plain(m, batch)

        def evaluate(m):  # falls as the weights move away from their start: epoch 1 is best,
            # so the resumed run must take the best weights from the checkpoint
            return {"dev_f1": -float((m.head.dense.weight.detach() - init).norm())}

        try:
            result = fit(model, train, cfg, objective, evaluate, checkpoints=checkpoints)
        except Interrupted:
            return None, None
        history = [{k: v for k, v in r.items() if k not in timing} for r in result.history]
        return model, (result.best_epoch, result.best_score, history, result.resumed_from)

    # 3 batches per epoch, 9 steps: mid-epoch saves after steps 4 and 8 (never after an epoch's
    # last batch), and one at every epoch end pointing at the next epoch's first batch
    straight = MemoryCheckpoints(every=4)
    model_a, result_a = run(straight)
    assert straight.saves == [(2, 0), (2, 1), (3, 0), (3, 2), (4, 0)]
    assert straight.cleared and straight.load() is None and result_a[3] is None

    resumed = MemoryCheckpoints(every=4)
    assert run(resumed, stop_at=6) == (None, None)  # killed at epoch 2, batch 2
    assert resumed.saves == [(2, 0), (2, 1)] and not resumed.cleared
    model_b, result_b = run(resumed)
    assert result_b[3] == "epoch 2, batch 1" and result_a[0] == 1
    assert resumed.saves == straight.saves  # the step counter carries on where it stopped
    assert result_b[:3] == result_a[:3]
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert resumed.cleared

    # resumed at an epoch start, with a cadence that no run reaches again before the end
    five = MemoryCheckpoints(every=5)
    run(five, stop_at=8)  # killed at epoch 3, batch 1: resumes from the end of epoch 2
    run(five)
    assert five.saves == [(2, 0), (2, 2), (3, 0), (4, 0)]

    ends_only, every_step = MemoryCheckpoints(every=0), MemoryCheckpoints(every=1)
    run(ends_only)
    run(every_step)
    assert ends_only.saves == [(2, 0), (3, 0), (4, 0)]
    assert every_step.saves == [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2), (4, 0)]


def test_an_ema_run_interrupted_mid_epoch_resumes_to_the_same_averaged_weights():
    # the EMA's shadow and its step count (its bias correction) travel in the checkpoint
    from jd_ner.modeling.averaging import AveragingConfig

    cfg = TrainConfig(epochs=3, batch_size=2, learning_rate=5e-3, amp=False, progress=False,
                      device="cpu", seed=7)

    def run(checkpoints, stop_at=None):
        model = tiny_model(["小米华为充ab12c手机壳子充电器 2"])
        calls, plain = [0], Objective({})
        init = model.head.dense.weight.detach().clone()

        def evaluate(m):  # grows as the (averaged) weights move away: the last epoch is kept
            return {"dev_f1": float((m.head.dense.weight.detach() - init).norm())}

        def objective(m, batch):
            calls[0] += 1
            if calls[0] == stop_at:
                raise Interrupted
            return plain(m, batch)

        try:
            result = fit(model, small_examples(model), cfg, objective, evaluate,
                         checkpoints=checkpoints, averaging=AveragingConfig("ema", ema_epochs=1.0))
        except Interrupted:
            return None
        assert result.best_epoch == 3
        return model.state_dict()

    straight = run(MemoryCheckpoints(every=2))
    resumed = MemoryCheckpoints(every=2)
    assert run(resumed, stop_at=6) is None  # killed in epoch 2, after a mid-epoch save
    again = run(resumed)
    assert all(torch.equal(straight[k], again[k]) for k in straight)
    plain_run = tiny_model(["小米华为充ab12c手机壳子充电器 2"])
    fit(plain_run, small_examples(plain_run), cfg, Objective({}), None)
    assert not all(torch.equal(straight[k], v) for k, v in plain_run.state_dict().items())


def test_fit_runs_the_objective_under_autocast_only_with_amp(monkeypatch):
    from jd_ner.modeling import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    seen = []

    def objective(m, batch):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return (m.head.dense.weight.float() ** 2).sum(), {}

    for amp in (True, False):
        model = tiny_model(["小米华为充ab12c手机壳子充电器 2"])
        fit(model, small_examples(model, 2), TrainConfig(epochs=1, batch_size=2, amp=amp, progress=False,
                                                          device="cpu"), objective, None)
    assert seen[0] == (True, torch.bfloat16)
    assert seen[1][0] is False


def test_objective_draws_its_mixer_for_the_batch_and_both_views(monkeypatch):
    model = tiny_model(TEXTS).eval()
    batch = labelled_batch(model, TEXTS)
    mixers = []
    features = model.features
    monkeypatch.setattr(model, "features", lambda b, m=None: mixers.append(m) or features(b, m))
    for rdrop in (False, True):
        objective = Objective({"mixup": {"enabled": True, "probability": 1.0, "layer": "encoder"},
                               "rdrop": {"enabled": rdrop}})
        torch.manual_seed(0)
        _, parts = objective(model, batch)
        assert parts["mixed"].item() == 1.0
    single, double = mixers
    assert sorted(single.perm.tolist()) == [0, 1, 2] and single.layer == "encoder"
    assert len(double.perm) == 6 and sorted(double.perm[:3].tolist()) == [0, 1, 2]
    assert torch.equal(double.perm[3:], double.perm[:3] + 3)
    never = Objective({"mixup": {"enabled": True, "probability": 0.0}})
    _, parts = never(model, batch)
    assert mixers[-1] is None and parts["mixed"].item() == 0.0
    _, parts = Objective({})(model, batch)
    assert "mixed" not in parts


def test_auxiliary_losses_of_a_mixed_batch_use_both_targets(monkeypatch):
    model = aux_model()
    batch = labelled_batch(model, TEXTS)
    mixer = Mixer(0.3, torch.tensor([2, 0, 1]), "encoder")
    objective = build_objective({"boundary": {"enabled": True, "weight": 0.5},
                                 "mixup": {"enabled": True}}, model)
    monkeypatch.setattr(objective, "sample_mixer", lambda *a: mixer)
    with torch.no_grad():
        _, parts = objective(model, batch)
        h = mixer(model.features(batch))
        scores = model.aux_heads["boundary"](h)
    target = batch["labels"].any(dim=1, keepdim=True)
    valid = valid_cells(torch.maximum(batch["char_mask"], batch["char_mask"][mixer.perm]))
    expected = (0.3 * brute_gp_loss(scores, target, valid)
                + 0.7 * brute_gp_loss(scores, target[mixer.perm], valid))
    assert parts["loss_boundary"].item() == pytest.approx(expected, rel=1e-5)


def test_multisample_dropout_uses_its_configured_rate():
    model = tiny_model(TEXTS).eval()
    batch = labelled_batch(model, TEXTS)
    seen = []
    head = model.head

    class Recorder(nn.Module):
        def forward(self, h):
            seen.append(h.detach().clone())
            return head(h)

    model.head = Recorder()
    torch.manual_seed(0)
    Objective({"multisample_dropout": {"enabled": True, "samples": 2, "p": 0.2}})(model, batch)
    assert len(seen) == 2
    for h in seen:
        assert 0.12 < (h == 0).float().mean().item() < 0.28  # about 20% dropped (not 50%)
