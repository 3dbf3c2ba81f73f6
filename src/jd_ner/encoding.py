"""Tables of titles <-> encoded model windows.

Title tables (ingest output) have columns ``title_id``, ``text``, ``spans`` (JSON list
of ``[start, end, type]``, end inclusive) and ``line`` (where the title starts in its
raw file). Encoded tables have one row per window: ``title_id``, ``char_start``,
``title_length``, ``text`` (the window's characters), ``char_ids``, ``bigram_ids`` and
``spans`` (JSON list of ``[start, end, label_index]`` relative to the window).
Per-character feature tables (pinyin, glyph, lexicon ids) have the same rows in the
same order: ``title_id``, ``char_start`` and one id list per character.
Soft-target tables (the distill pipeline's) are title tables with ``source`` (``train``: a
train-split title, its ``title_id`` the split's; ``unlabelled``), ``soft`` (JSON list of
``[start, end, type, probability]``) and ``train_split`` (the split's digest).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

import pandas as pd

from jd_ner.modeling.batching import Example, window_starts
from jd_ner.modeling.distill import SoftCell, window_cells
from jd_ner.text.char_features import encode_sequences, glyph_sequences, pinyin_sequences
from jd_ner.text.lexicon import LexiconMatcher
from jd_ner.text.vocab import Vocab, encode_bigrams, encode_chars

logger = logging.getLogger(__name__)

TITLE_COLUMNS = ["title_id", "text", "spans", "line"]


def spans_of(cell: str) -> list[tuple[int, int, str]]:
    return [(int(s), int(e), str(t)) for s, e, t in json.loads(cell)]


def spans_cell(spans: Sequence[Sequence]) -> str:
    return json.dumps([[int(s), int(e), str(t)] for s, e, t, *_ in spans], ensure_ascii=False)


def titles_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=TITLE_COLUMNS)
    return frame.astype({"title_id": "int64", "line": "int64"})


def gold_entities(titles: pd.DataFrame) -> set[tuple[int, int, int, str]]:
    return {(int(tid), s, e, t) for tid, cell in zip(titles["title_id"], titles["spans"], strict=True)
            for s, e, t in spans_of(cell)}


def encode_titles(titles: pd.DataFrame, char_vocab: Vocab, bigram_vocab: Vocab | None,
                  labels: Sequence[str], max_chars: int, stride: int) -> pd.DataFrame:
    """One row per window; a gold span is kept in every window that holds it whole.

    A span no window holds whole (longer than the window overlap at a cut), and a span of
    a type the label schema lacks (a type seen in dev or test only), cannot be a training
    target: they are counted and logged, not silently lost, and stay in the title tables
    that scoring reads.
    """
    label_index = {name: i for i, name in enumerate(labels)}
    rows, cut, unknown = [], 0, 0
    for tid, text, cell in zip(titles["title_id"], titles["text"], titles["spans"], strict=True):
        spans = spans_of(cell)
        known = [span for span in spans if span[2] in label_index]
        unknown += len(spans) - len(known)
        spans = known
        char_ids = encode_chars(char_vocab, text)
        bigram_ids = encode_bigrams(bigram_vocab, text) if bigram_vocab is not None else None
        held = set()
        for start in window_starts(len(text), max_chars, stride):
            end = min(start + max_chars, len(text))
            inside = [(s, e, t) for s, e, t in spans if start <= s and e < end]
            held.update(inside)
            rows.append({
                "title_id": int(tid), "char_start": start, "title_length": len(text),
                "text": text[start:end], "char_ids": char_ids[start:end],
                "bigram_ids": bigram_ids[start:end] if bigram_ids is not None else None,
                "spans": json.dumps([[s - start, e - start, label_index[t]] for s, e, t in inside]),
            })
        cut += len(spans) - len(held)
    if cut:
        logger.warning("%d gold spans are longer than any window overlap and were cut", cut)
    if unknown:
        logger.warning("%d gold spans have types outside the label schema and are no "
                       "training targets", unknown)
    return pd.DataFrame(rows, columns=["title_id", "char_start", "title_length", "text",
                                       "char_ids", "bigram_ids", "spans"])


def window_titles(encoded: pd.DataFrame) -> dict[int, str]:
    """Each title's whole text, put back together from its windows."""
    parts: dict[int, list[str]] = {}
    for tid, start, length, text in zip(encoded["title_id"], encoded["char_start"],
                                        encoded["title_length"], encoded["text"], strict=True):
        chars = parts.setdefault(int(tid), [""] * int(length))
        chars[int(start):int(start) + len(text)] = list(text)
    return {tid: "".join(chars) for tid, chars in parts.items()}


def with_model_vocabularies(encoded: pd.DataFrame, char_vocab: Vocab,
                            bigram_vocab: Vocab | None) -> pd.DataFrame:
    """The windows' character and bigram ids in the given vocabularies.

    A model reads titles with its own vocabularies, which are not the features pipeline's
    when its encoder was pretrained on unlabelled titles. A window's last bigram reads the
    next character of its title, so ids come from the whole title, then are cut.
    """
    if encoded.empty:
        return encoded
    titles = window_titles(encoded)
    chars = {tid: encode_chars(char_vocab, text) for tid, text in titles.items()}
    grams = {tid: encode_bigrams(bigram_vocab, text) for tid, text in titles.items()} \
        if bigram_vocab is not None else None
    starts = encoded["char_start"].astype(int).to_numpy()
    ends = starts + encoded["text"].str.len().to_numpy()
    tids = encoded["title_id"].astype(int).to_numpy()
    return encoded.assign(
        char_ids=[chars[t][s:e] for t, s, e in zip(tids, starts, ends, strict=True)],
        bigram_ids=[grams[t][s:e] for t, s, e in zip(tids, starts, ends, strict=True)]
        if grams is not None else None)


def sequence_table(encoded: pd.DataFrame, column: str,
                   per_window: Callable[[str], list[list[int]]]) -> pd.DataFrame:
    """A per-character id-sequence table aligned with ``encoded`` (one row per window)."""
    values = [per_window(text) for text in encoded["text"]]
    return pd.DataFrame({"title_id": encoded["title_id"].to_numpy(),
                         "char_start": encoded["char_start"].to_numpy(), column: values})


def pinyin_ids(vocab: Vocab, length: int) -> Callable[[str], list[list[int]]]:
    return lambda text: encode_sequences(vocab, pinyin_sequences(text), length)


def glyph_ids(vocab: Vocab, length: int, depth: int) -> Callable[[str], list[list[int]]]:
    return lambda text: encode_sequences(vocab, glyph_sequences(text, depth), length)


def lexicon_ids(matcher: LexiconMatcher, per_char: int) -> Callable[[str], list[list[int]]]:
    return lambda text: matcher.features(text, per_char)


def _nested(cell) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(i) for i in ids) for ids in cell)


def examples_from_frame(frame: pd.DataFrame, **sequences: pd.DataFrame) -> list[Example]:
    """Model examples from an encoded table and, by field name (``pinyin_ids``,
    ``glyph_ids``, ``lexicon_ids``), aligned per-character feature tables."""
    for name, table in sequences.items():
        if not (len(table) == len(frame)
                and (table["title_id"].to_numpy() == frame["title_id"].to_numpy()).all()
                and (table["char_start"].to_numpy() == frame["char_start"].to_numpy()).all()):
            raise ValueError(f"the {name} table is not aligned with the encoded windows: "
                             "re-run the features pipeline")
    columns = {name: table[name].tolist() for name, table in sequences.items()}
    out = []
    has_bigrams = "bigram_ids" in frame and frame["bigram_ids"].notna().all()
    for k, row in enumerate(frame.itertuples(index=False)):
        out.append(Example(
            title_id=int(row.title_id), char_start=int(row.char_start),
            title_length=int(row.title_length),
            char_ids=tuple(int(i) for i in row.char_ids),
            bigram_ids=tuple(int(i) for i in row.bigram_ids) if has_bigrams else None,
            spans=tuple((int(s), int(e), int(t)) for s, e, t in json.loads(row.spans)),
            **{name: _nested(values[k]) for name, values in columns.items()},
        ))
    return out


def model_sequences(model, encoded: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The per-character feature tables ``model`` reads, computed with its own vocabularies."""
    spec, out = model.spec, {}
    if spec.pinyin:
        out["pinyin_ids"] = sequence_table(encoded, "pinyin_ids",
                                           pinyin_ids(model.pinyin_vocab, spec.pinyin["length"]))
    if spec.glyph:
        out["glyph_ids"] = sequence_table(encoded, "glyph_ids", glyph_ids(
            model.glyph_vocab, spec.glyph["length"], spec.glyph["depth"]))
    if spec.lexicon:
        out["lexicon_ids"] = lexicon_table(model, encoded)
    if spec.words:
        out["word_ids"] = word_table(model, encoded)
    return out


def word_table(model, encoded: pd.DataFrame) -> pd.DataFrame:
    """SoftLexicon word-set ids per character of every window, from the model's own words."""
    per_set = int(model.spec.words["per_set"])
    return sequence_table(encoded, "word_ids",
                          lambda text: model.word_matcher.features(text, per_set))


def lexicon_table(model, encoded: pd.DataFrame) -> pd.DataFrame:
    """Lexicon feature ids per character of every window, from the model's own lexicon."""
    return sequence_table(encoded, "lexicon_ids", lexicon_ids(model.lexicon_matcher,
                                                               model.spec.lexicon["per_char"]))


def examples_for_model(model, titles: pd.DataFrame) -> list[Example]:
    """Encode titles exactly as ``model`` was trained to read them (its vocabularies,
    windows and feature settings): what evaluation and submission use."""
    spec = model.spec
    encoded = encode_titles(titles, model.char_vocab, model.bigram_vocab, model.labels,
                            spec.max_chars, spec.window_stride)
    return examples_from_frame(encoded, **model_sequences(model, encoded))


def soft_cells_of(cell: str, labels: Sequence[str]) -> list[SoftCell]:
    """A ``soft`` cell's ``[start, end, type, p]`` entries with label indices."""
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for s, e, t, p in json.loads(cell):
        if t not in index:
            raise ValueError(f"soft target of type {t!r}, which the model does not know "
                             f"(its types: {list(labels)})")
        out.append((int(s), int(e), index[t], float(p)))
    return out


def soft_cells_cell(cells: Sequence[SoftCell], labels: Sequence[str]) -> str:
    return json.dumps([[int(s), int(e), labels[t], round(float(p), 6)] for s, e, t, p in cells],
                      ensure_ascii=False)


def with_soft_targets(model, train: Sequence[Example], texts: dict[int, str],
                      targets: pd.DataFrame, first_id: int) -> list[Example]:
    """The train windows with their titles' soft targets, followed by the unlabelled
    titles' windows (numbered from ``first_id``; gold weight 0, so only their soft targets
    teach). Every train title must have its row, with the same text."""
    own = targets[targets["source"] == "train"]
    by_id: dict[int, list[SoftCell]] = {}
    for tid, text, cell in zip(own["title_id"], own["text"], own["soft"], strict=True):
        if texts.get(int(tid)) != text:
            raise ValueError(f"the soft targets' train title {int(tid)} ({text[:30]!r}) is not "
                             "this split's title of that id: they were made for other data")
        by_id[int(tid)] = soft_cells_of(cell, model.labels)
    missing = set(texts) - set(by_id)
    if missing:
        raise ValueError(f"{len(missing)} train titles have no soft targets (e.g. title "
                         f"{min(missing)}): make the targets again for this split")
    out = [replace(ex, soft=window_cells(by_id[ex.title_id], ex.char_start, len(ex)))
           for ex in train]
    extra = targets[targets["source"] == "unlabelled"]
    if len(extra):
        titles = titles_frame([{"title_id": first_id + k, "text": text, "spans": "[]", "line": line}
                               for k, (text, line) in enumerate(zip(extra["text"], extra["line"],
                                                                    strict=True))])
        cells = {first_id + k: soft_cells_of(cell, model.labels)
                 for k, cell in enumerate(extra["soft"])}
        out += [replace(ex, weight=0.0, soft=window_cells(cells[ex.title_id], ex.char_start, len(ex)))
                for ex in examples_for_model(model, titles)]
    return out
