"""Pretrained knowledge: masked-character pretraining, the encoder it hands to training,
LAC-small inside the NER model, and windows re-read with a model's own vocabularies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from jd_ner.checkpoints import CheckpointStore
from jd_ner.encoder_files import texts_digest
from jd_ner.encoding import encode_titles, titles_frame, with_model_vocabularies
from jd_ner.modeling.batching import Collator, Example
from jd_ner.modeling.encoder import EncoderConfig
from jd_ner.modeling.pretraining import (
    MaskedCharModel,
    choose_masks,
    corrupt,
    masked_char_objective,
    weights_digest,
)
from jd_ner.pipelines.pretrain.nodes import collect_unlabelled_titles, pretrain_char_encoder
from jd_ner.pipelines.train.nodes import build_model
from jd_ner.text.bio import RawFile
from jd_ner.text.vocab import build_bigram_vocab, build_char_vocab, encode_bigrams, encode_chars
from tests.conftest import TINY_MODEL, tiny_config, tiny_features

TEXTS = ["小米手机壳硅胶防摔", "华为充电器20W快充", "苹果数据线 1米", "小米充电器快充头"]


def titles(texts, start=0):
    return titles_frame([{"title_id": start + i, "text": t, "spans": "[]", "line": i + 1}
                         for i, t in enumerate(texts)])


def mlm_model(texts=TEXTS, **encoder):
    cv, bv = build_char_vocab(texts), build_bigram_vocab(texts, 1)
    torch.manual_seed(0)
    return MaskedCharModel(EncoderConfig(**{**TINY_MODEL["encoder"], **encoder}), cv.to_dict(),
                           bv.to_dict())


def batch_of(model, texts):
    examples = [Example(i, 0, len(t), tuple(encode_chars(model.char_vocab, t)),
                        tuple(encode_bigrams(model.bigram_vocab, t))) for i, t in enumerate(texts)]
    vocab = model.char_vocab
    return Collator(vocab.id_of("pad"), vocab.id_of("cls"), vocab.id_of("sep"), 0, True)(
        examples, with_labels=False)


# --- masking -----------------------------------------------------------------------------

def test_choose_masks_picks_real_characters_at_the_rate_and_at_least_one_per_title():
    torch.manual_seed(1)
    char_mask = torch.zeros(400, 12, dtype=torch.bool)
    char_mask[:, 1:11] = True
    char_mask[0, :] = False  # an empty row stays empty
    chosen = choose_masks(char_mask, 0.15)
    assert not (chosen & ~char_mask).any()
    assert chosen[1:].any(dim=1).all() and not chosen[0].any()
    assert chosen.float().sum() / char_mask.float().sum() == pytest.approx(0.15 + 0.85**10 * 0.1,
                                                                           abs=0.02)
    tiny = choose_masks(char_mask[:50], 1e-9)  # nothing drawn: exactly one each
    assert tiny[1:].sum(dim=1).tolist() == [1] * 49


def test_corrupt_masks_80_10_10_and_hides_the_bigrams_that_hold_a_chosen_character():
    torch.manual_seed(2)
    size, length = 3000, 6
    ids = torch.randint(10, 50, (size, length))
    bigrams = torch.randint(2, 40, (size, length))
    char_mask = torch.ones(size, length, dtype=torch.bool)
    char_mask[:, 0] = char_mask[:, -1] = False
    chosen = torch.zeros_like(char_mask)
    chosen[:, 3] = True
    batch = {"input_ids": ids, "bigram_ids": bigrams, "char_mask": char_mask}
    out = corrupt(batch, chosen, mask_id=4, first_char_id=6, vocab_size=50, bigram_unk_id=1)
    new = out["input_ids"][:, 3]
    masked, kept = (new == 4).float().mean(), (new == ids[:, 3]).float().mean()
    assert masked == pytest.approx(0.8, abs=0.03)
    assert kept == pytest.approx(0.1 + 0.1 / 44, abs=0.03)  # kept, or swapped to itself
    assert ((new == 4) | ((new >= 6) & (new < 50))).all()
    others = [0, 1, 2, 4, 5]
    assert torch.equal(out["input_ids"][:, others], ids[:, others])
    # bigram 3 is (c3, c4) and bigram 2 is (c2, c3): both give c3 away; the rest stay
    assert (out["bigram_ids"][:, [2, 3]] == 1).all()
    assert torch.equal(out["bigram_ids"][:, [0, 1, 4, 5]], bigrams[:, [0, 1, 4, 5]])
    assert torch.equal(batch["input_ids"], ids)  # the input batch is left alone


def test_masked_char_loss_is_the_cross_entropy_of_the_chosen_characters():
    model = mlm_model().eval()  # no dropout: the forward pass can be repeated
    batch = batch_of(model, TEXTS)
    objective = masked_char_objective(0.3)
    torch.manual_seed(5)
    loss, parts = objective(model, batch)
    # the same draws again, then an independent computation of the loss
    torch.manual_seed(5)
    chosen = choose_masks(batch["char_mask"], 0.3)
    vocab = model.char_vocab
    inputs = corrupt(batch, chosen, vocab.id_of("mask"), 6, len(vocab), 1)
    h, _ = model.encoder(inputs["input_ids"], inputs["attention_mask"], inputs["bigram_ids"])
    logits = model.predict(h)
    logp = torch.log_softmax(logits, dim=-1)
    positions = chosen.nonzero().tolist()
    expected = -sum(logp[b, t, batch["input_ids"][b, t]] for b, t in positions) / len(positions)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert 0.0 <= parts["masked_accuracy"].item() <= 1.0
    with pytest.raises(ValueError, match="mask_probability"):
        masked_char_objective(1.5)


def test_pretraining_learns_to_restore_characters(tmp_path):
    texts = ["小米手机壳", "华为充电器"] * 40
    unlabelled = titles(texts)
    params = {"char_min_count": 1, "bigram_min_count": 1, "mask_probability": 0.2, "dropout": 0.1,
              "optim": {"epochs": 12, "batch_size": 16, "learning_rate": 1e-2, "amp": False,
                        "progress": False, "device": "cpu", "resume": "never"}}
    train = {"model": {"encoder": {**TINY_MODEL["encoder"], "dropout": 0.4}}}  # training's
    split = titles(["小米手机壳"])
    encoder, history = pretrain_char_encoder(unlabelled, split, train, params, tiny_features(),
                                             CheckpointStore(str(tmp_path)))
    assert history["masked_accuracy"].iloc[-1] > 0.6 > history["masked_accuracy"].iloc[0]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert encoder.info["titles"] == 80 and encoder.encoder.init == "scratch"
    assert encoder.encoder.dropout == 0.1  # pretrain.dropout
    assert "小" in encoder.char_vocab["tokens"] and "米手" in encoder.bigram_vocab["tokens"]
    assert encoder.info["train_split"] == texts_digest(["小米手机壳"])
    assert encoder.info["weights_sha256"] == weights_digest(encoder.state)


def test_the_pretraining_checkpoint_key_ignores_run_control_only(tmp_path):
    keys = []

    class Store:
        def for_run(self, key, every, resume):
            keys.append(key)
            return CheckpointStore(str(tmp_path)).for_run(key, every, "never")

    def key_of(**changes):
        optim = {"epochs": 1, "batch_size": 8, "amp": False, "progress": False, "device": "cpu",
                 "resume": "auto", **changes}
        params = {"char_min_count": 1, "bigram_min_count": 1, "mask_probability": 0.2, "dropout": 0.1,
                  "optim": optim}
        pretrain_char_encoder(titles(TEXTS), titles(TEXTS[:1]),
                              {"model": {"encoder": TINY_MODEL["encoder"]}}, params,
                              tiny_features(), Store())
        return keys[-1]

    plain = key_of()
    assert key_of(resume="required", progress=True, threads=1, checkpoint_every=7) == plain
    assert key_of(learning_rate=0.5) != plain and key_of(seed=3) != plain


def test_the_encoder_pretrains_with_its_own_dropout_and_training_s_dropout_keeps_its_key():
    from jd_ner.pipelines.pretrain.nodes import pretraining_key

    params = {"char_min_count": 1, "bigram_min_count": 1, "mask_probability": 0.2,
              "dropout": 0.1, "optim": {"epochs": 1}}

    def key(encoder_dropout=0.1, **changes):
        config = {"model": {"encoder": {**TINY_MODEL["encoder"], "dropout": encoder_dropout}}}
        return pretraining_key(config, {**params, **changes}, tiny_features(), TEXTS)

    plain, inputs = key()
    assert inputs["encoder"]["dropout"] == 0.1 and "dropout" not in inputs["pretrain"]
    assert key(encoder_dropout=0.3)[0] == plain  # fine-tuning's dropout: the same encoder
    other, inputs = key(dropout=0.3)  # pretraining's own: another encoder, pretrained at 0.3
    assert other != plain and inputs["encoder"]["dropout"] == 0.3


def test_a_matching_saved_encoder_is_reused_and_any_other_setting_pretrains_again(tmp_path, caplog):
    import time

    from kedro.io import Version

    from jd_ner.datasets import PretrainedEncoderDataset, SavedEncodersDataset
    from jd_ner.encoder_files import NEWEST_REUSED, NOT_PRETRAINED
    from jd_ner.pipelines.pretrain.nodes import char_encoder_for_training

    def params(**changes):
        return {"char_min_count": 1, "bigram_min_count": 1, "mask_probability": 0.2, "dropout": 0.1,
                "optim": {"epochs": 1, "batch_size": 8, "amp": False, "progress": False,
                          "device": "cpu", "resume": "never"}, **changes}

    def save(encoder):
        PretrainedEncoderDataset(str(tmp_path / "char_encoder"), Version(None, None)).save(encoder)
        time.sleep(0.01)  # versions are named by the millisecond

    def saved():
        return SavedEncodersDataset(str(tmp_path / "char_encoder")).load()

    def run(texts=TEXTS, train=TEXTS[:1], config=None, **changes):
        config = config or {"model": {"encoder": {**TINY_MODEL["encoder"], "init": "pretrained"}}}
        return char_encoder_for_training(titles(texts), titles(train), config, params(**changes),
                                         tiny_features(), CheckpointStore(str(tmp_path / "ckpt")),
                                         saved())

    first, history = run()
    save(first)
    with caplog.at_level("INFO"):  # run control only: the newest is reused as it is
        again, history_again = run(optim={**params()["optim"], "threads": 1, "progress": True})
    assert "reusing the pretrained encoder" in caplog.text and again is NEWEST_REUSED
    pd.testing.assert_frame_equal(history_again, history)
    caplog.clear()
    with caplog.at_level("INFO"):
        other, _ = run(mask_probability=0.3)
    assert "other settings: pretrain.mask_probability" in caplog.text
    assert other.info["run_key"] != first.info["run_key"]
    save(other)  # now the newest; the first is still found, loaded and saved as the newest
    older, _ = run()
    assert older.info["weights_sha256"] == first.info["weights_sha256"]
    assert all(torch.equal(older.state[k], v) for k, v in first.state.items())
    for texts, train in ((TEXTS[1:], TEXTS[1:2]), (TEXTS, TEXTS[1:2])):  # titles, split
        assert run(texts, train)[0].info["run_key"] != first.info["run_key"]
    fresh, _ = run(reuse=False)
    assert fresh.info["run_key"] == first.info["run_key"] and fresh is not older
    scratch = {"model": {"encoder": {**TINY_MODEL["encoder"], "init": "scratch"}}}
    nothing, _ = run(config=scratch)
    assert nothing is NOT_PRETRAINED
    hugging_face = char_encoder_for_training(titles(TEXTS), titles(TEXTS[:1]), {"model": {
        "encoder": {"init": "pretrained"}}}, params(), tiny_features(), None, [], "/models/x")[0]
    assert hugging_face is NOT_PRETRAINED
    versions = len(saved())
    for marker in (nothing, again):
        save(marker)
    assert len(saved()) == versions  # nothing written


# --- the unlabelled titles -------------------------------------------------------------------

def test_unlabelled_titles_leave_out_dev_and_test_titles_and_duplicates():
    raw = RawFile("a.txt", "小米手机壳\n华为充电器\n测试标题一\n小米手机壳\n".encode())
    train, dev, test = titles(["训练标题", "华为充电器"]), titles(["测试标题一"]), titles(["开发"])
    frame, report = collect_unlabelled_titles([raw], train, dev, test)
    assert frame["text"].tolist() == ["小米手机壳", "华为充电器", "训练标题"]
    assert frame["line"].tolist() == [1, 2, 0]
    assert report["held_out_titles_excluded"] == 1 and report["duplicates"] == 2
    assert report["sources"] == [{"source": "a.txt", "titles": 4, "kept": 2},
                                 {"source": "train split", "titles": 2, "kept": 1}]
    with pytest.raises(ValueError, match="no unlabelled titles"):
        collect_unlabelled_titles([], titles([]), dev, test)


# --- training from the pretrained encoder ---------------------------------------------------

def pretrained_encoder(texts=TEXTS):
    model = mlm_model(texts)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))  # weights no fresh model could have
    return model.pretrained({"summary": "test"})


class Saved:
    """Stands for a saved encoder folder (``jd_ner.encoder_files.SavedEncoder``)."""

    def __init__(self, encoder):
        self.encoder, self.loads = encoder, 0

    def load(self):
        self.loads += 1
        return self.encoder


def build(config, char_encoder=None, texts=("小米",)):
    cv, bv = build_char_vocab(texts).to_dict(), build_bigram_vocab(texts, 1).to_dict()
    schema = {"labels": ["1", "4"]}
    saved = Saved(char_encoder) if char_encoder is not None else None
    return build_model(config, cv, bv, {}, {}, {}, schema, tiny_features(), None, saved)


def test_a_model_built_on_the_pretrained_encoder_starts_from_its_weights_and_vocabularies():
    pretrained = pretrained_encoder()
    config = tiny_config("pretrained")
    config["model"]["encoder"]["dropout"] = 0.3
    model = build(config, pretrained)
    state = model.encoder.state_dict()
    assert state.keys() == pretrained.state.keys()
    assert all(torch.equal(state[k], pretrained.state[k]) for k in state)
    assert model.spec.char_vocab == pretrained.char_vocab  # not the features' vocabulary
    assert model.spec.bigram_vocab == pretrained.bigram_vocab
    assert model.spec.encoder.init == "pretrained" and model.spec.encoder.dropout == 0.3
    with pytest.raises(ValueError, match="run `kedro run --pipelines=pretrain` first"):
        build(config, None)
    scratch = build(tiny_config(), pretrained)  # init: scratch ignores it
    assert scratch.spec.char_vocab != pretrained.char_vocab
    unread = Saved(None)  # a scratch run never reads the folder (a broken one cannot stop it)
    build_model(tiny_config(), pretrained.char_vocab, pretrained.bigram_vocab, {}, {}, {},
                {"labels": ["1"]}, tiny_features(), None, unread)
    assert unread.loads == 0
    other = tiny_config("pretrained+lac")
    with pytest.raises(ValueError, match=r"another architecture .*lac: 'frozen', 'off'"):
        build(other, pretrained)
    bigger = tiny_config("pretrained")
    bigger["model"]["encoder"]["lstm_hidden"] = 64
    with pytest.raises(ValueError, match="lstm_hidden: 64, 16"):
        build(bigger, pretrained)


def test_training_refuses_a_pretrained_encoder_or_pseudo_labels_made_for_another_split(tmp_path):
    from jd_ner.pipelines.train.nodes import train_model

    pretrained = pretrained_encoder()
    pretrained.info["train_split"] = texts_digest(["another split's title"])
    model = build(tiny_config("pretrained"), pretrained)
    frame = titles(["小米手机壳", "华为充电器"])
    encoded = encode_titles(frame, model.char_vocab, model.bigram_vocab, [], 30, 20)
    config = tiny_config("pretrained")
    with pytest.raises(ValueError, match="made for another train split"):
        train_model(model, encoded, encoded, {"folds": []}, frame, config, {},
                    CheckpointStore(str(tmp_path)))
    model = build(tiny_config())
    pseudo = titles(["苹果数据线"]).assign(train_split=texts_digest(["another split's title"]))
    with pytest.raises(ValueError, match="pseudo-labelled titles were made for another"):
        train_model(model, encoded, encoded, {"folds": []}, frame, tiny_config("pseudo"), {},
                    CheckpointStore(str(tmp_path)), pseudo)


def test_windows_are_re_read_with_the_model_vocabularies_across_window_cuts():
    texts = ["小米手机壳硅胶防摔男女款加长版" * 3, "华为"]
    frame = titles(texts)
    own_c, own_b = build_char_vocab(texts), build_bigram_vocab(texts, 1)
    other_c, other_b = build_char_vocab(["华为手机"]), build_bigram_vocab(["华为手机"], 1)
    encoded = encode_titles(frame, other_c, other_b, [], 30, 20)
    assert (encoded["title_id"] == 0).sum() > 1  # the long title has several windows
    again = with_model_vocabularies(encoded, own_c, own_b)
    expected = encode_titles(frame, own_c, own_b, [], 30, 20)
    assert again["char_ids"].tolist() == expected["char_ids"].tolist()
    assert again["bigram_ids"].tolist() == expected["bigram_ids"].tolist()
    assert again.drop(columns=["char_ids", "bigram_ids"]).equals(
        encoded.drop(columns=["char_ids", "bigram_ids"]))


def test_pretrained_encoder_dataset_is_none_until_saved_then_round_trips(tmp_path):
    from kedro.io import Version

    from jd_ner.datasets import PretrainedEncoderDataset

    def dataset():
        return PretrainedEncoderDataset(str(tmp_path / "enc"), Version(None, None))

    assert dataset().load() is None
    pretrained = pretrained_encoder()
    dataset().save(pretrained)
    loaded = dataset().load().load()  # the dataset hands over the folder; reading is explicit
    assert loaded.char_vocab == pretrained.char_vocab and loaded.info == {"summary": "test"}
    assert all(torch.equal(loaded.state[k], v) for k, v in pretrained.state.items())
    folder = next((tmp_path / "enc").iterdir()) / "enc"
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["format"] = "jd_ner.encoder/0"
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    saved = dataset().load()  # a broken folder does not fail the load ...
    with pytest.raises(ValueError, match="pretrain it again"):
        saved.load()  # ... only reading it, in a run that starts from it


# --- LAC-small inside the model ---------------------------------------------------------------

@pytest.fixture(scope="module")
def lac_weights():
    pytest.importorskip("jieba")  # the LAC tests need jieba's weight files
    from jd_ner.lac_files import read_lac

    return read_lac()


def lac_ner(lac_weights, mode, texts=("小米手机壳ＡＢ", "华为 充电器"), layers=1):
    from jd_ner.lac_files import attach_lac
    from jd_ner.modeling.model import HeadConfig, ModelSpec, NerModel

    cv, bv = build_char_vocab(texts), build_bigram_vocab(texts, 1)
    spec = ModelSpec(labels=["1"], char_vocab=cv.to_dict(), bigram_vocab=bv.to_dict(),
                     encoder=EncoderConfig(**{**TINY_MODEL["encoder"], "lac": mode,
                                              "lac_layers": layers}),
                     head=HeadConfig(**TINY_MODEL["head"]), max_chars=30, window_stride=20)
    torch.manual_seed(0)
    model = NerModel(spec)
    report = attach_lac(model.encoder, model.char_vocab, lac_weights)
    return model, report


def ner_batch(model, texts):
    examples = [Example(i, 0, len(t), tuple(encode_chars(model.char_vocab, t)),
                        tuple(encode_bigrams(model.bigram_vocab, t))) for i, t in enumerate(texts)]
    vocab = model.char_vocab
    return Collator(vocab.id_of("pad"), vocab.id_of("cls"), vocab.id_of("sep"), 1, True)(examples)


def test_lac_states_in_the_model_are_lac_run_on_the_characters_alone(lac_weights):
    from jd_ner.lac_files import lac_char_ids
    from jd_ner.modeling.lac import LacBiGRU

    texts = ["小米手机壳ＡＢ", "华为 充电器"]
    model, report = lac_ner(lac_weights, "frozen", texts, layers=2)
    assert report["unknown_to_lac"] == 0
    reference = LacBiGRU.from_arrays(lac_weights.arrays).eval()
    batch = ner_batch(model, texts)
    states = model.encoder.lac_states(batch["input_ids"])
    assert states.shape == (2, 9, 512)
    for b, text in enumerate(texts):
        ids = torch.tensor([lac_char_ids(text, lac_weights.vocab_index)])
        with torch.no_grad():
            layers = reference(ids, torch.tensor([len(text)]), all_layers=True)
        expected = torch.cat(layers, dim=-1)[0]
        assert torch.allclose(states[b, 1 : len(text) + 1], expected, atol=1e-5)
        assert not states[b, 0].any() and not states[b, len(text) + 1 :].any()  # [CLS], [SEP], pad
    assert model.encoder.lstm.layers[0]["ltr"].input_size == 32 + 512


def test_frozen_lac_gets_no_gradient_and_finetuned_lac_its_own_learning_rate(lac_weights):
    from jd_ner.modeling.training import TrainConfig, _param_groups

    texts = ["小米手机壳ＡＢ", "华为 充电器"]
    for mode in ("frozen", "finetune"):
        model, _ = lac_ner(lac_weights, mode, texts)
        model.train()
        scores = model(ner_batch(model, texts))
        scores.float().sum().backward()
        lac_grads = [p.grad for p in model.encoder.lac.parameters()]
        groups = _param_groups(model, TrainConfig(learning_rate=1e-3, lac_learning_rate=1e-5))
        lac_ids = {id(p) for p in model.encoder.lac.parameters()}
        in_groups = {id(p): g["lr"] for g in groups for p in g["params"]}
        if mode == "frozen":
            assert all(g is None for g in lac_grads) and not lac_ids & in_groups.keys()
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in lac_grads)
            assert {in_groups[i] for i in lac_ids} == {1e-5}
        assert model.head.dense.weight.grad is not None


def test_a_saved_lac_model_predicts_the_same_without_the_jieba_files(lac_weights, tmp_path,
                                                                    monkeypatch):
    from jd_ner import lac_files
    from jd_ner.datasets import load_model, save_model

    texts = ["小米手机壳ＡＢ", "华为 充电器"]
    model, _ = lac_ner(lac_weights, "frozen", texts)
    model.eval()
    save_model(model, tmp_path / "m")
    monkeypatch.setattr(lac_files, "read_lac", lambda *a: pytest.fail("read the jieba files"))
    loaded = load_model(tmp_path / "m")
    batch = ner_batch(model, texts)
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))


def test_the_character_map_to_lac_uses_lac_ids_and_folds_full_width(lac_weights):
    model, report = lac_ner(lac_weights, "frozen", ["小Ａ", "☃"])
    index = lac_weights.vocab_index
    lac_index = model.encoder.lac_index
    vocab = model.char_vocab
    assert lac_index[vocab.lookup("小")] == index["小"]
    assert lac_index[vocab.id_of("pad")] == index["OOV"] == lac_index[vocab.id_of("cls")]
    assert report["vocabulary"] == 3
    if "☃" not in index:
        assert report["unknown_to_lac"] >= 1 and lac_index[vocab.lookup("☃")] == index["OOV"]


def test_lac_setting_is_validated():
    with pytest.raises(ValueError, match="off, frozen or finetune"):
        mlm_model(lac="yes")


def test_masked_model_over_lac_features_trains(lac_weights):
    from jd_ner.lac_files import attach_lac

    model = mlm_model(lac="frozen")
    attach_lac(model.encoder, model.char_vocab, lac_weights)
    loss, _ = masked_char_objective(0.3)(model, batch_of(model, TEXTS))
    loss.backward()
    assert np.isfinite(loss.item()) and model.predict.weight.grad is not None
    assert all(p.grad is None for p in model.encoder.lac.parameters())


# --- SoftLexicon word sets ------------------------------------------------------------------

def test_word_frequencies_parse_and_name_the_bad_line():
    from jd_ner.text.words import parse_word_frequencies

    assert parse_word_frequencies(["手机 30 n", "手机壳 5", "", "手机 2 v"]) == {"手机": 32, "手机壳": 5}
    with pytest.raises(ValueError, match=r"dict.txt:2: .*'手机壳 many'"):
        parse_word_frequencies(["手机 3", "手机壳 many"], "dict.txt")


def test_word_vocab_holds_dictionary_words_found_in_the_texts_most_frequent_first():
    from jd_ner.text.words import build_word_vocab

    dictionary = {"手机": 50, "手机壳": 7, "硅胶": 9, "壳": 100, "电脑": 80, "防 摔": 3}
    vocab = build_word_vocab(["华为手机壳硅胶", "手机支架"], dictionary, 2, 8)
    assert vocab["words"] == ["手机", "硅胶", "手机壳"]  # 电脑 is not in the texts, 壳 is short
    assert vocab["frequencies"] == [50, 9, 7] and vocab["occurrences"] == [2, 1, 1]


def test_word_sets_give_each_character_the_words_that_begin_continue_and_end_there():
    from jd_ner.text.words import WordMatcher

    matcher = WordMatcher(["手机", "手机壳", "机壳", "硅胶"])  # ids 1, 2, 3, 4
    rows = matcher.features("手机壳硅胶x", per_set=2)
    #           B        M       E
    expected = [[1, 2, 0, 0, 0, 0],   # 手: 手机, 手机壳 begin
                [3, 0, 2, 0, 1, 0],   # 机: 机壳 begins, inside 手机壳, 手机 ends
                [0, 0, 0, 0, 2, 3],   # 壳: 手机壳 and 机壳 end
                [4, 0, 0, 0, 0, 0],
                [0, 0, 0, 0, 4, 0],
                [0, 0, 0, 0, 0, 0]]
    assert rows == expected
    assert matcher.features("手机壳", per_set=1)[0] == [1, 0, 0]  # the most frequent kept


def test_word_set_embedding_is_the_frequency_weighted_mean_per_set():
    from jd_ner.modeling.feature_layers import WordSetEmbedding

    torch.manual_seed(0)
    layer = WordSetEmbedding([10, 100, 1], dim=4, width=5, per_set=2)
    ids = torch.tensor([[[1, 2, 0, 0, 3, 0]]])
    out = layer(ids)
    e = layer.embedding.weight.detach()
    w = np.log1p([10.0, 100.0])
    b_set = (w[0] * e[1] + w[1] * e[2]) / (w[0] + w[1])
    e_set = e[3]  # one word: its own vector, whatever its weight
    expected = layer.project(torch.cat([b_set.float(), torch.zeros(4), e_set])[None])
    assert torch.allclose(out[0, 0], expected[0], atol=1e-6)


def test_a_words_model_reads_word_sets_and_carries_its_words(tmp_path):
    from jd_ner.datasets import load_model, save_model
    from jd_ner.encoding import examples_for_model

    config = tiny_config("words")
    vocab = {"words": ["手机", "硅胶"], "frequencies": [50, 9], "occurrences": [1, 1]}
    with pytest.raises(ValueError, match="word_vocab"):
        build_model(config, build_char_vocab(["手机"]).to_dict(),
                    build_bigram_vocab(["手机"], 1).to_dict(), {}, {}, {}, {"labels": ["1"]},
                    tiny_features(), None, None, None)
    model = build_model(config, build_char_vocab(["手机壳硅胶"]).to_dict(),
                        build_bigram_vocab(["手机壳硅胶"], 1).to_dict(), {}, {}, {},
                        {"labels": ["1"]}, tiny_features(), None, None, vocab)
    assert model.sequence_fields == ("word_ids",)
    examples = examples_for_model(model, titles(["手机壳硅胶"]))
    assert examples[0].word_ids[0] == (1, 0, 0, 0, 0, 0, 0, 0, 0)  # B set of 手: 手机
    save_model(model.eval(), tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.spec.words["words"] == ["手机", "硅胶"]
    batch = Collator(0, 2, 3, 1, True, ("word_ids",))(examples)
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))
        without = dict(batch, word_ids=torch.zeros_like(batch["word_ids"]))
        assert not torch.equal(model(batch), model(without))  # the words change the scores


# --- self-training ----------------------------------------------------------------------------

class _Spec:
    trained_on = "train split"
    train_split = None  # an older model: not checked (a warning)


class _Model:
    labels = ["1", "4"]
    spec = _Spec()


def test_pseudo_labels_keep_titles_whose_every_entity_is_confident(monkeypatch):
    from jd_ner.pipelines.pseudo_label import nodes

    predicted = {  # text -> (spans, scores)
        "小米手机壳": ('[[0, 1, "1"], [2, 4, "4"]]', [3.0, 2.5]),   # all >= 2: kept
        "华为充电器": ('[[0, 1, "1"], [2, 4, "4"]]', [3.0, 1.0]),   # one unsure: dropped
        "苹果数据线": ("[]", []),                                     # nothing found: dropped
        "绿联转换头": ('[[0, 1, "4"], [0, 2, "4"]]', [2.2, 1.5]),   # overlap resolved first
    }

    def fake_predict(model, frame, params):
        return pd.DataFrame({"title_id": frame["title_id"],
                             "spans": [predicted[t][0] for t in frame["text"]],
                             "scores": [predicted[t][1] for t in frame["text"]]})

    monkeypatch.setattr(nodes, "predict_titles", fake_predict)
    unlabelled = titles(["小米手机壳", "华为充电器", "苹果数据线", "绿联转换头", "训练标题"])
    params = {"min_score": 2.0, "max_titles": 0, "seed": 1}
    decode = {"overlap": "greedy_score", "whitespace": "trim"}
    frame, report = nodes.pseudo_label_titles(_Model(), unlabelled, titles(["训练标题"]), params,
                                              {}, decode)
    assert frame["text"].tolist() == ["小米手机壳", "绿联转换头"]
    assert json.loads(frame["spans"][1]) == [[0, 1, "4"]]  # the greedy winner, 2.2
    assert report["candidates"] == 4 and report["kept"] == 2 and report["entities"] == 3
    assert report["titles_without_entities"] == 1
    sample, report = nodes.pseudo_label_titles(_Model(), unlabelled, titles(["训练标题"]),
                                               {**params, "max_titles": 2}, {}, decode)
    assert report["candidates"] == 2
    _Spec.train_split = texts_digest(["another split's title"])
    with pytest.raises(ValueError, match="trained on another train split"):
        nodes.pseudo_label_titles(_Model(), unlabelled, titles(["训练标题"]), params, {}, decode)
    _Spec.train_split = texts_digest(["训练标题"])
    frame, _ = nodes.pseudo_label_titles(_Model(), unlabelled, titles(["训练标题"]), params, {},
                                         decode)
    assert set(frame["train_split"]) == {texts_digest(["训练标题"])}
    _Spec.train_split = None
    _Spec.trained_on = "all labelled titles (final_fit; unevaluated)"
    try:
        with pytest.raises(ValueError, match="trained on the train split"):
            nodes.pseudo_label_titles(_Model(), unlabelled, titles([]), params, {}, decode)
    finally:
        _Spec.trained_on = "train split"


def test_pseudo_weight_scales_each_title_span_loss():
    from jd_ner.modeling.losses import multilabel_gp_loss
    from jd_ner.modeling.tricks import Objective

    torch.manual_seed(3)
    scores = torch.randn(3, 2, 5, 5)
    labels = torch.zeros(3, 2, 5, 5, dtype=torch.bool)
    labels[0, 0, 1, 2] = labels[1, 1, 2, 3] = labels[2, 0, 1, 1] = True
    valid = torch.ones(5, 5, dtype=torch.bool).triu()[None, None]
    per = multilabel_gp_loss(scores, labels, valid, reduction="none")  # (3, 2)
    objective = Objective({})
    weight = torch.tensor([1.0, 0.5, 0.0])
    weighted = objective.span_loss(scores, labels, valid, weight)
    expected = (per[0].sum() + 0.5 * per[1].sum()) / 6
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)
    assert objective.span_loss(scores, labels, valid).item() == pytest.approx(per.mean().item())


def test_collator_passes_weights_only_when_a_title_is_not_gold():
    collate = Collator(0, 2, 3, 1, False)
    gold = Example(0, 0, 2, (5, 6))
    pseudo = Example(1, 0, 2, (5, 6), weight=0.25)
    assert "weight" not in collate([gold, gold])
    assert collate([gold, pseudo])["weight"].tolist() == [1.0, 0.25]
    assert "weight" not in collate([gold, pseudo], with_labels=False)


def test_mixup_weights_each_label_set_by_its_own_title():
    from jd_ner.modeling.losses import multilabel_gp_loss
    from jd_ner.modeling.tricks import Mixer, Objective

    torch.manual_seed(4)
    scores = torch.randn(3, 2, 5, 5)
    labels = torch.rand(3, 2, 5, 5) > 0.9
    valid = torch.ones(5, 5, dtype=torch.bool).triu()[None, None]
    weight = torch.tensor([1.0, 0.25, 0.5])
    perm = torch.tensor([2, 0, 1])
    mixed = Objective({}).mixed_loss(scores, labels, valid, Mixer(0.7, perm, "encoder"), weight)
    own = multilabel_gp_loss(scores, labels, valid, reduction="none").sum(1)
    partner = multilabel_gp_loss(scores, labels[perm], valid, reduction="none").sum(1)
    expected = sum(0.7 * weight[b] * own[b] + 0.3 * weight[perm[b]] * partner[b]
                   for b in range(3)) / 6
    assert mixed.item() == pytest.approx(float(expected), rel=1e-6)
