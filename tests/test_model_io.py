"""Saved models: safetensors + JSON, loaded with no other configuration."""

import json

import pytest
import torch

from jd_ner.datasets import load_model, save_model
from jd_ner.modeling.batching import Collator, Example
from jd_ner.modeling.encoder import EncoderConfig
from jd_ner.modeling.model import HeadConfig, ModelSpec, NerModel
from jd_ner.text.vocab import build_bigram_vocab, build_char_vocab, encode_bigrams, encode_chars

from .conftest import TINY_MODEL


def tiny_model(texts, labels=("1", "4")):
    cv, bv = build_char_vocab(texts), build_bigram_vocab(texts, 1)
    spec = ModelSpec(labels=list(labels), char_vocab=cv.to_dict(), bigram_vocab=bv.to_dict(),
                     encoder=EncoderConfig(**TINY_MODEL["encoder"]),
                     head=HeadConfig(**TINY_MODEL["head"]), max_chars=30, window_stride=20)
    torch.manual_seed(0)
    return NerModel(spec)


def batch_for(model, texts):
    examples = [Example(i, 0, len(t), tuple(encode_chars(model.char_vocab, t)),
                        tuple(encode_bigrams(model.bigram_vocab, t))) for i, t in enumerate(texts)]
    collate = Collator(model.char_vocab.id_of("pad"), model.char_vocab.id_of("cls"),
                       model.char_vocab.id_of("sep"), len(model.labels), True)
    return collate(examples, with_labels=False)


def test_save_load_round_trip(tmp_path):
    texts = ["小米 手机壳 R17", "华为充电器 20W"]
    model = tiny_model(texts).eval()
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    assert config["labels"] == ["1", "4"] and "小" in config["char_vocab"]["tokens"]
    loaded = load_model(tmp_path / "m")
    batch = batch_for(model, texts)
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))


def test_loading_rejects_weights_that_do_not_match(tmp_path):
    model = tiny_model(["abc"])
    save_model(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["labels"].append("extra")
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="size mismatch|do not match"):
        load_model(tmp_path / "m")


def test_unknown_characters_map_to_unk_and_spaces_to_space_token():
    cv = build_char_vocab(["ab c"])
    ids = encode_chars(cv, "a\u3000z")
    assert ids == [cv.lookup("a"), cv.id_of("space"), cv.id_of("unk")]


def test_out_of_memory_names_the_batch_and_what_to_lower():
    from jd_ner.modeling.training import OutOfMemory, TrainConfig, fit

    model = tiny_model(["小米手机壳", "华为充电器"])
    examples = [Example(i, 0, 5, tuple(encode_chars(model.char_vocab, t)),
                        tuple(encode_bigrams(model.bigram_vocab, t)))
                for i, t in enumerate(["小米手机壳", "华为充电器"])]

    def objective(m, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemory, match=r"batch of 2 titles padded to 7 tokens.*batch_size=1"):
        fit(model, examples, TrainConfig(epochs=1, batch_size=2, progress=False), objective,
            lambda m: {"dev_f1": 0.0})
