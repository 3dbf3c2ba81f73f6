"""Property-based tests: readers and the submission writer on hostile Unicode.

Invariants: a reader either returns titles or raises an InputFormatError that names the
file and line; a submission has exactly one tag per input character; titles longer than
the model's window are predicted whole (overlapping windows), never truncated.
"""

import json
from functools import lru_cache

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jd_ner.pipelines.evaluate.nodes import predict_titles
from jd_ner.pipelines.submit.nodes import write_submission
from jd_ner.text.bio import (
    InputFormatError,
    decode,
    format_submission,
    parse_bio,
    parse_title_lines,
    spans_to_tags,
    validate_submission,
)

from .conftest import DECODE
from .test_model_io import tiny_model

NASTY = ["\u3000", "\u200b", "\u200d", "\u0301", "\u20dd", "😀", "👩", "\r", "\t", " ",
         "\ufeff", "\u2028", "\x85", "\x00", "\u202e", "Ａ", "ß", "İ"]
char = st.one_of(st.characters(exclude_characters="\n", exclude_categories=("Cs",)),
                 st.sampled_from(NASTY))
title_text = st.text(char, min_size=1, max_size=40)
label = st.text(st.sampled_from("0123456789abc品牌-_"), min_size=1, max_size=4)
profile = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])


@st.composite
def titles_with_spans(draw):
    out = []
    for _ in range(draw(st.integers(1, 5))):
        text = draw(title_text)
        cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=6)))
        spans = []
        for a, b in zip(cuts[::2], cuts[1::2], strict=False):
            if a < b:
                spans.append((a, b - 1, draw(label)))
        out.append((text, spans))
    if out[0][0].startswith("\ufeff"):  # indistinguishable from a byte-order mark
        out[0] = ("x" + out[0][0], [(s + 1, e + 1, t) for s, e, t in out[0][1]])
    return out


@profile
@given(titles_with_spans())
def test_bio_round_trip_on_hostile_unicode(titles):
    content = format_submission([t for t, _ in titles],
                                [spans_to_tags(len(t), s) for t, s in titles])
    parsed, _ = parse_bio(decode(content.encode("utf-8"), "f.txt"), "f.txt", orphan="error")
    assert [(p.text, list(p.spans)) for p in parsed] == [(t, sorted(s)) for t, s in titles]


@profile
@given(st.binary(max_size=200))
def test_bio_reader_on_random_bytes_fails_only_with_a_located_message(raw):
    try:
        titles, _ = parse_bio(decode(raw, "junk.txt"), "junk.txt")
    except InputFormatError as err:
        assert str(err).startswith("junk.txt")
        if err.line is not None:
            assert 1 <= err.line <= raw.count(b"\n") + 1
            assert str(err).startswith(f"junk.txt:{err.line}:")
    else:
        assert all(t.text for t in titles)


@profile
@given(st.lists(st.text(char, max_size=12), min_size=0, max_size=12))
def test_bio_reader_on_random_lines_fails_only_with_a_located_message(lines):
    text = "\n".join(lines)
    try:
        parse_bio(text, "lines.txt")
    except InputFormatError as err:
        assert str(err).startswith("lines.txt")
        assert err.line is None or 1 <= err.line <= len(lines)


@profile
@given(st.lists(title_text.filter(lambda t: not t.endswith("\r")), min_size=1, max_size=8),
       st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_title_file_round_trip(texts, newline, final_newline):
    content = newline.join(texts) + (newline if final_newline else "")
    if texts[0].startswith("\ufeff"):
        content = "\ufeff" + content  # a BOM in front; the title's own U+FEFF stays
    titles, _ = parse_title_lines(decode(content.encode("utf-8"), "t.txt"), "t.txt")
    assert [t.text for t in titles] == texts


@profile
@given(st.lists(st.text(char, max_size=8), min_size=1, max_size=8))
def test_title_file_empty_titles_are_located_errors(lines):
    content = "\n".join(lines)
    try:
        titles, _ = parse_title_lines(content, "t.txt")
    except InputFormatError as err:
        assert str(err).startswith("t.txt")
    else:
        assert all(t.text for t in titles)


@profile
@given(titles_with_spans())
def test_submission_has_one_tag_per_character(titles):
    texts = [t for t, _ in titles]
    content = format_submission(texts, [spans_to_tags(len(t), s) for t, s in titles])
    validate_submission(content, texts)
    assert content.count("\n") == sum(len(t) + 1 for t in texts)


@lru_cache(maxsize=1)
def _model():
    return tiny_model(["小米手机壳 R17", "华为充电器"], labels=("1", "4")).eval()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(char, min_size=1, max_size=90).filter(lambda t: not t.endswith("\r")),
                min_size=1, max_size=4))
def test_submission_node_tags_every_character_of_long_titles(texts):
    model = _model()  # windows of 30 characters, 20 apart
    frame = pd.DataFrame({"title_id": range(len(texts)), "text": texts,
                          "spans": ["[]"] * len(texts), "line": range(1, len(texts) + 1)})
    predictions = predict_titles(model, frame, {"batch_size": 8, "device": "cpu", "amp": False})
    for text, cell in zip(texts, predictions["spans"], strict=True):
        assert all(0 <= s <= e < len(text) for s, e, _ in json.loads(cell))
    content = write_submission(frame, predictions, model, DECODE)
    assert content.count("\n") == sum(len(t) + 1 for t in texts)
    validate_submission(content, texts)
