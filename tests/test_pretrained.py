"""A local Hugging Face encoder folder as the encoder: vocabulary, training, saving."""

import json
import shutil

import pandas as pd
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from jd_ner.datasets import load_model, save_model
from jd_ner.pipelines.features.nodes import build_char_vocabulary
from jd_ner.pipelines.train.nodes import build_model
from jd_ner.text.vocab import Vocab, encode_chars

from .conftest import tiny_config, tiny_features


def make_local_encoder(folder, chars):
    tokens = ["[PAD]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##s", *chars]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    config = BertConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return tokens


def test_pretrained_vocabulary_training_and_reload(tmp_path):
    tokens = make_local_encoder(tmp_path / "enc", list("小米手机壳ab"))
    assert len(AutoTokenizer.from_pretrained(str(tmp_path / "enc")).get_vocab()) == len(tokens)
    train = pd.DataFrame({"text": ["小米 手机壳", "AB壳"]})
    vocab_dict = build_char_vocabulary(train, str(tmp_path / "enc"), {"char_min_count": 1})
    vocab = Vocab.from_dict(vocab_dict)
    assert vocab.tokens == tokens  # ids are the tokenizer's
    ids = encode_chars(vocab, "小 A壳Z")
    assert ids == [tokens.index("小"), tokens.index("[unused1]"), tokens.index("a"),
                   tokens.index("壳"), tokens.index("[UNK]")]
    bigrams = {"tokens": ["[PAD]", "[UNK]"], "specials": {"pad": "[PAD]", "unk": "[UNK]"}}
    model = build_model(tiny_config(), vocab_dict, bigrams, None, None, {}, {"labels": ["4"]},
                        tiny_features(), str(tmp_path / "enc"))
    assert model.spec.encoder.kind == "pretrained"
    pretrained = BertModel.from_pretrained(str(tmp_path / "enc"))
    assert torch.equal(model.encoder.transformer.embeddings.word_embeddings.weight,
                       pretrained.embeddings.word_embeddings.weight)
    save_model(model, tmp_path / "saved")
    shutil.rmtree(tmp_path / "enc")
    reloaded = load_model(tmp_path / "saved")  # no access to the encoder folder needed
    assert torch.equal(reloaded.encoder.transformer.embeddings.word_embeddings.weight,
                       pretrained.embeddings.word_embeddings.weight)
