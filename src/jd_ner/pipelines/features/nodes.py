"""Title tables -> vocabularies, label schema and encoded model windows."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from jd_ner.encoding import encode_titles, glyph_ids, pinyin_ids, sequence_table, spans_of
from jd_ner.metrics import type_sort_key
from jd_ner.text.char_features import build_sequence_vocab, glyph_sequences, pinyin_sequences
from jd_ner.text.lexicon import build_lexicon
from jd_ner.text.vocab import (
    Vocab,
    build_bigram_vocab,
    build_char_vocab,
    char_vocab_from_tokenizer_vocab,
)

logger = logging.getLogger(__name__)


def build_char_vocabulary(train: pd.DataFrame, pretrained_encoder: str | None,
                          params: dict) -> dict:
    """Characters of the train split, or a local Hugging Face tokenizer's vocabulary.

    With a pretrained encoder the ids must be the tokenizer's, so its vocabulary is
    used as is; characters it lacks map to its unknown token.
    """
    if not pretrained_encoder:
        vocab = build_char_vocab(train["text"], int(params["char_min_count"]))
        logger.info("character vocabulary: %d tokens from %d titles", len(vocab), len(train))
        return vocab.to_dict()
    from transformers import AutoTokenizer

    path = Path(pretrained_encoder)
    if not path.is_dir():
        raise FileNotFoundError(f"pretrained_encoder: {path} is not a directory "
                                "(a local Hugging Face model folder is expected)")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    roles = {"pad": tok.pad_token, "unk": tok.unk_token, "cls": tok.cls_token,
             "sep": tok.sep_token, "mask": tok.mask_token}
    missing = [role for role, token in roles.items() if token is None]
    if missing:
        raise ValueError(f"{path}: the tokenizer has no {missing} token; a BERT-style "
                         "encoder with [PAD]/[UNK]/[CLS]/[SEP]/[MASK] is expected")
    lowercase = bool(getattr(tok, "do_lower_case", False)) or bool(
        tok.init_kwargs.get("do_lower_case", False))
    vocab = char_vocab_from_tokenizer_vocab(tok.get_vocab(), roles, lowercase)
    unknown = sum(vocab.lookup(c) == vocab.id_of("unk") for text in train["text"] for c in text
                  if not c.isspace())
    logger.info("character vocabulary from %s: %d tokens; %d train characters map to %s",
                path, len(vocab), unknown, roles["unk"])
    return vocab.to_dict()


def build_bigram_vocabulary(train: pd.DataFrame, params: dict) -> dict:
    """Character bigrams of the train split seen at least ``bigram_min_count`` times."""
    vocab = build_bigram_vocab(train["text"], int(params["bigram_min_count"]))
    logger.info("bigram vocabulary: %d tokens", len(vocab))
    return vocab.to_dict()


def build_label_schema(train: pd.DataFrame, dev: pd.DataFrame) -> dict:
    """Entity types of the labelled data, numeric names in numeric order."""
    types = {t for frame in (train, dev) for cell in frame["spans"] for _, _, t in spans_of(cell)}
    if not types:
        raise ValueError("the labelled titles contain no entities: nothing to learn")
    return {"labels": sorted(types, key=type_sort_key)}


def encode_split(titles: pd.DataFrame, char_vocab: dict, bigram_vocab: dict,
                 label_schema: dict, params: dict) -> pd.DataFrame:
    """Encode a split into model windows (see ``jd_ner.encoding``)."""
    return encode_titles(titles, Vocab.from_dict(char_vocab), Vocab.from_dict(bigram_vocab),
                         label_schema["labels"], int(params["max_chars"]),
                         int(params["window_stride"]))


def build_pinyin_vocabulary(train: pd.DataFrame) -> dict:
    """Letters and tone digits of the train titles' pinyin (plus [PAD], [UNK], [NONE])."""
    vocab = build_sequence_vocab(seq for text in train["text"] for seq in pinyin_sequences(text))
    logger.info("pinyin vocabulary: %d tokens", len(vocab))
    return vocab.to_dict()


def build_glyph_vocabulary(train: pd.DataFrame, params: dict) -> dict:
    """Glyph components of the train titles' characters (plus [PAD], [UNK], [NONE])."""
    depth = int(params["glyph_depth"])
    vocab = build_sequence_vocab(
        (seq for text in train["text"] for seq in glyph_sequences(text, depth)),
        int(params["glyph_min_count"]))
    logger.info("glyph component vocabulary: %d tokens", len(vocab))
    return vocab.to_dict()


def build_entity_lexicon(train: pd.DataFrame, params: dict) -> dict:
    """Entity strings of the **train split** with their type counts (GPKG knowledge).

    Only the train split is read, so no dev or test string can leak into the model.
    """
    lexicon = build_lexicon(zip(train["text"], map(spans_of, train["spans"]), strict=True),
                            int(params["lexicon_min_count"]), int(params["lexicon_min_length"]))
    multi = sum(len(types) > 1 for types in lexicon.values())
    logger.info("entity lexicon: %d strings (%d with several types)", len(lexicon), multi)
    return lexicon


def encode_pinyin(encoded: pd.DataFrame, pinyin_vocab: dict, params: dict) -> pd.DataFrame:
    """Pinyin letter ids per character of every window, read in the window's context."""
    return sequence_table(encoded, "pinyin_ids",
                          pinyin_ids(Vocab.from_dict(pinyin_vocab), int(params["pinyin_length"])))


def encode_glyphs(encoded: pd.DataFrame, glyph_vocab: dict, params: dict) -> pd.DataFrame:
    """Glyph-component ids per character of every window."""
    return sequence_table(encoded, "glyph_ids", glyph_ids(
        Vocab.from_dict(glyph_vocab), int(params["glyph_length"]), int(params["glyph_depth"])))
