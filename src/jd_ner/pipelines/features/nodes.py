"""Title tables -> vocabularies, label schema, lexicons and one model-input table per split."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pandas as pd

from jd_ner.encoding import encode_titles, glyph_ids, pinyin_ids, sequence_table, spans_of
from jd_ner.lac_files import jieba_dictionary
from jd_ner.metrics import type_sort_key
from jd_ner.text.char_features import build_sequence_vocab, glyph_sequences, pinyin_sequences
from jd_ner.text.lexicon import build_lexicon, fold_of_titles
from jd_ner.text.vocab import (
    Vocab,
    build_bigram_vocab,
    build_char_vocab,
    char_vocab_from_tokenizer_vocab,
)
from jd_ner.text.words import build_word_vocab

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


def build_word_vocabulary(train: pd.DataFrame, params: dict) -> dict:
    """jieba dictionary words found in the train split, for SoftLexicon word sets
    (``train.model.words``); each with its dictionary frequency."""
    vocab = build_word_vocab(train["text"], jieba_dictionary(), int(params["word_min_length"]),
                             int(params["word_max_length"]))
    logger.info("word vocabulary: %d jieba dictionary words occur in the train split",
                len(vocab["words"]))
    return vocab


def build_label_schema(train: pd.DataFrame, dev: pd.DataFrame, test: pd.DataFrame) -> dict:
    """Entity types of the **train split**, numeric names in numeric order.

    Types that occur only in dev or test cannot be learnt; they are not added but counted
    (``unseen_in_train``) and logged, and their entities stay in the gold sets, where they
    count as misses.
    """
    types = {t for cell in train["spans"] for _, _, t in spans_of(cell)}
    if not types:
        raise ValueError("the train split contains no entities: nothing to learn")
    unseen = {}
    for name, frame in (("dev", dev), ("test", test)):
        counts = Counter(t for cell in frame["spans"] for _, _, t in spans_of(cell) if t not in types)
        if counts:
            unseen[name] = dict(sorted(counts.items()))
            logger.warning("%s split: %d entities of types never seen in train (%s); the model "
                           "cannot predict them and they count as misses", name,
                           sum(counts.values()), ", ".join(sorted(counts, key=type_sort_key)))
    return {"labels": sorted(types, key=type_sort_key), "unseen_in_train": unseen}


def encode_split(titles: pd.DataFrame, char_vocab: dict, bigram_vocab: dict,
                 label_schema: dict, params: dict) -> pd.DataFrame:
    """Encode a split into model windows (see ``jd_ner.encoding``)."""
    return encode_titles(titles, Vocab.from_dict(char_vocab), Vocab.from_dict(bigram_vocab),
                         label_schema["labels"], int(params["max_chars"]),
                         int(params["window_stride"]))


def build_model_input(encoded: pd.DataFrame, pinyin_vocab: dict, glyph_vocab: dict,
                      params: dict) -> pd.DataFrame:
    """One table per split with everything a model may read per window: the encoded
    characters, bigrams and spans, plus pinyin and glyph-component ids per character.

    (Lexicon matches depend on the model's lexicon mode and, for the train split, on the
    out-of-fold lexicons; they are matched when training starts.)
    """
    pinyin = encode_pinyin(encoded, pinyin_vocab, params)
    glyph = encode_glyphs(encoded, glyph_vocab, params)
    return encoded.assign(pinyin_ids=pinyin["pinyin_ids"].to_numpy(),
                          glyph_ids=glyph["glyph_ids"].to_numpy())


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

    Only the train split is read, so no dev or test string can leak into the model. This
    lexicon encodes dev, test and new titles; the train split itself is encoded with the
    out-of-fold lexicons of :func:`build_entity_lexicon_folds`.
    """
    lexicon = _lexicon_of(train, params)
    multi = sum(len(types) > 1 for types in lexicon.values())
    logger.info("entity lexicon: %d strings (%d with several types)", len(lexicon), multi)
    return lexicon


def build_entity_lexicon_folds(train: pd.DataFrame, params: dict) -> dict:
    """Out-of-fold lexicons for encoding the train split itself.

    The train titles are split into ``lexicon_folds`` seeded folds; fold k's titles are
    matched against the lexicon of the other folds, so no title sees a lexicon built from
    its own labels and the model learns how far a match on an unseen title can be trusted.
    """
    k = int(params["lexicon_folds"])
    if k < 2:
        raise ValueError(f"features.lexicon_folds must be at least 2, got {k}")
    fold = fold_of_titles(train["title_id"], k, int(params["lexicon_fold_seed"]))
    folds = []
    for f in range(k):
        inside = train["title_id"].map(fold).to_numpy() == f
        folds.append({"title_ids": sorted(int(t) for t in train["title_id"][inside]),
                      "lexicon": _lexicon_of(train[~inside], params)})
    logger.info("out-of-fold entity lexicons: %d folds of ~%d train titles", k, len(train) // k)
    return {"folds": folds}


def _lexicon_of(titles: pd.DataFrame, params: dict) -> dict:
    return build_lexicon(zip(titles["text"], map(spans_of, titles["spans"]), strict=True),
                         int(params["lexicon_min_count"]), int(params["lexicon_min_length"]))


def encode_pinyin(encoded: pd.DataFrame, pinyin_vocab: dict, params: dict) -> pd.DataFrame:
    """Pinyin letter ids per character of every window, read in the window's context."""
    return sequence_table(encoded, "pinyin_ids",
                          pinyin_ids(Vocab.from_dict(pinyin_vocab), int(params["pinyin_length"])))


def encode_glyphs(encoded: pd.DataFrame, glyph_vocab: dict, params: dict) -> pd.DataFrame:
    """Glyph-component ids per character of every window."""
    return sequence_table(encoded, "glyph_ids", glyph_ids(
        Vocab.from_dict(glyph_vocab), int(params["glyph_length"]), int(params["glyph_depth"])))
