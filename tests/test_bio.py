"""The BIO and title-file readers, tag conversion and the submission validator."""

import pytest

from jd_ner.text.bio import (
    InputFormatError,
    SubmissionError,
    decode,
    format_submission,
    parse_bio,
    parse_title_lines,
    spans_to_tags,
    tags_to_spans,
    validate_submission,
)


def parse(text, orphan="repair"):
    return parse_bio(text, "train.txt", orphan)


def test_space_tokens_are_characters_not_separators():
    titles, _ = parse("a B-x\n  I-x\nb I-x\n  O\nc O\n\n")
    assert titles[0].text == "a b c"
    assert titles[0].spans == ((0, 2, "x"),)


def test_crlf_and_bom_are_tolerated():
    raw = "\ufeffa B-1\r\nb I-1\r\n\r\nc O\r\n".encode()
    titles, _ = parse(decode(raw, "f"))
    assert [t.text for t in titles] == ["ab", "c"]
    assert titles[0].spans == ((0, 1, "1"),)
    assert titles[1].line == 4


def test_any_tag_names_and_several_blank_lines():
    titles, _ = parse("苹 B-品牌\n果 I-品牌\n\n\n\n手 B-product_type\n机 I-product_type\t \n")
    assert titles[0].spans == ((0, 1, "品牌"),)
    assert titles[1].spans == ((0, 1, "product_type"),)


def test_orphan_inside_title_is_repaired_and_counted():
    titles, report = parse("a O\nb I-4\nc I-4\nd B-5\ne I-6\n\n")
    assert titles[0].spans == ((1, 2, "4"), (3, 3, "5"), (4, 4, "6"))
    assert report.orphans_repaired == 2
    assert "train.txt:2" in report.notes[0]


def test_orphan_is_an_error_when_configured():
    with pytest.raises(InputFormatError) as err:
        parse("a O\nb O\n\nc O\nd I-4\n", orphan="error")
    assert err.value.line == 5
    assert "d I-4" in str(err.value)


@pytest.mark.parametrize("line", ["ab O", "a", "a X-1", "a B-", "aO", "a B-1 junk", "a O x"])
def test_malformed_line_names_file_line_and_content(line):
    with pytest.raises(InputFormatError) as err:
        parse(f"x O\n\ny O\n{line}\n")
    assert err.value.line == 4
    assert str(err.value).startswith("train.txt:4:")
    assert repr(line) in str(err.value)


def test_bioes_and_bmes_are_converted():
    titles, report = parse("a S-1\nb B-2\nc M-2\nd E-2\ne O\n")
    assert titles[0].spans == ((0, 0, "1"), (1, 3, "2"))
    assert report.tags_converted == 3


@pytest.mark.parametrize("text", ["", "\n\n\n", "\r\n"])
def test_empty_file_is_an_error(text):
    with pytest.raises(InputFormatError, match="no titles"):
        parse(text)


def test_undecodable_bytes_name_their_line():
    raw = b"a O\nb O\n" + b"\xff\xfe O\n"
    with pytest.raises(InputFormatError) as err:
        decode(raw, "bad.txt")
    assert err.value.line == 3
    assert "bad.txt:3" in str(err.value)


def test_title_lines_keep_spaces_and_reject_inner_blank_lines():
    titles, report = parse_title_lines("a b \n c\r\n", "test.txt")
    assert [t.text for t in titles] == ["a b ", " c"]
    with pytest.raises(InputFormatError) as err:
        parse_title_lines("a\n\nb\n", "test.txt")
    assert err.value.line == 2


def test_gold_spans_round_trip_through_bio():
    spans = [(0, 2, "4"), (4, 4, "1"), (5, 9, "a-b")]
    assert tags_to_spans(spans_to_tags(10, spans), orphan="error") == spans


def test_submission_round_trip_and_validation():
    texts = ["a b", "cd"]
    tags = [["B-1", "I-1", "I-1"], ["O", "B-2"]]
    content = format_submission(texts, tags)
    assert content == "a B-1\n  I-1\nb I-1\n\nc O\nd B-2\n\n"
    validate_submission(content, texts, labels=["1", "2"])


@pytest.mark.parametrize("content, message", [
    ("a O\n  O\nb O\n\nd O\nc O\n\n", "expected 'c'"),       # characters swapped
    ("a O\n  O\nb O\nc O\nd O\n\n", "blank line"),            # titles merged
    ("a O\n  O\nb O\n\nc O\n\n", "expected 'd'"),             # a character missing
    ("a O\n  O\nb O\n\nc O\nd O\n\nx O\n\n", "after the last"),  # extra title
    ("a O\n  O\nb O\n\nc O\nd I-1\n\n", "does not continue"),  # orphan I
    ("a O\n  O\nb O\n\nc O\nd B-9\n\n", "unknown type"),
])
def test_validator_rejects_misaligned_submissions(content, message):
    with pytest.raises(SubmissionError, match=message):
        validate_submission(content, ["a b", "cd"], labels=["1"])
