"""Tables of titles <-> encoded model windows.

Title tables (ingest output) have columns ``title_id``, ``text``, ``spans`` (JSON list
of ``[start, end, type]``, end inclusive) and ``line`` (where the title starts in its
raw file). Encoded tables have one row per window: ``title_id``, ``char_start``,
``title_length``, ``char_ids``, ``bigram_ids`` and ``spans`` (JSON list of
``[start, end, label_index]`` relative to the window).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import pandas as pd

from jd_ner.modeling.batching import Example, window_starts
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

    A span no window holds whole (longer than the window overlap at a cut) is reported,
    not silently lost: the count is logged.
    """
    label_index = {name: i for i, name in enumerate(labels)}
    rows, cut = [], 0
    for tid, text, cell in zip(titles["title_id"], titles["text"], titles["spans"], strict=True):
        spans = spans_of(cell)
        unknown = {t for _, _, t in spans} - label_index.keys()
        if unknown:
            raise ValueError(f"title {tid}: entity types {sorted(unknown)} are not in the label schema")
        char_ids = encode_chars(char_vocab, text)
        bigram_ids = encode_bigrams(bigram_vocab, text) if bigram_vocab is not None else None
        held = set()
        for start in window_starts(len(text), max_chars, stride):
            end = min(start + max_chars, len(text))
            inside = [(s, e, t) for s, e, t in spans if start <= s and e < end]
            held.update(inside)
            rows.append({
                "title_id": int(tid), "char_start": start, "title_length": len(text),
                "char_ids": char_ids[start:end],
                "bigram_ids": bigram_ids[start:end] if bigram_ids is not None else None,
                "spans": json.dumps([[s - start, e - start, label_index[t]] for s, e, t in inside]),
            })
        cut += len(spans) - len(held)
    if cut:
        logger.warning("%d gold spans are longer than any window overlap and were cut", cut)
    return pd.DataFrame(rows, columns=["title_id", "char_start", "title_length", "char_ids",
                                       "bigram_ids", "spans"])


def examples_from_frame(frame: pd.DataFrame) -> list[Example]:
    """Model examples from an encoded table."""
    out = []
    has_bigrams = "bigram_ids" in frame and frame["bigram_ids"].notna().all()
    for row in frame.itertuples(index=False):
        out.append(Example(
            title_id=int(row.title_id), char_start=int(row.char_start),
            title_length=int(row.title_length),
            char_ids=tuple(int(i) for i in row.char_ids),
            bigram_ids=tuple(int(i) for i in row.bigram_ids) if has_bigrams else None,
            spans=tuple((int(s), int(e), int(t)) for s, e, t in json.loads(row.spans)),
        ))
    return out
