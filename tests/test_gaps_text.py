"""Vocabularies, bigrams, BIO/submission edge rules, lexicon helpers, window merging and
overlap resolution, each against hand-worked values."""

import math

import pytest
import torch

from jd_ner.modeling.batching import window_starts
from jd_ner.modeling.decode import clean_whitespace, decode_title, merge_windows, resolve_overlaps
from jd_ner.modeling.heads import valid_cells
from jd_ner.modeling.losses import multilabel_gp_loss
from jd_ner.text.bio import (
    InputFormatError,
    SubmissionError,
    Title,
    format_submission,
    parse_bio,
    parse_title_lines,
    spans_to_tags,
    validate_submission,
)
from jd_ner.text.char_features import glyph_sequences
from jd_ner.text.lexicon import LexiconMatcher, build_lexicon, fold_of_titles, select_entries
from jd_ner.text.vocab import (
    Vocab,
    bigrams,
    build_bigram_vocab,
    build_char_vocab,
    char_vocab_from_tokenizer_vocab,
    encode_bigrams,
    encode_chars,
)

# --------------------------------------------------------------------------- vocabularies


def test_bigrams_pair_each_character_with_its_right_neighbour():
    assert bigrams("ab") == ["ab", "b</s>"]
    assert bigrams("小米手") == ["小米", "米手", "手</s>"]
    assert bigrams("a\u3000b\t") == ["a ", " b", "b ", " </s>"]


def test_bigram_vocabulary_counts_orders_and_honours_min_count():
    vocab = build_bigram_vocab(["abab"], 1)  # ab x2, ba x1, b</s> x1
    assert vocab.tokens == ["[PAD]", "[UNK]", "ab", "b</s>", "ba"]
    assert vocab.specials == {"pad": "[PAD]", "unk": "[UNK]"}
    assert build_bigram_vocab(["abab"], 2).tokens == ["[PAD]", "[UNK]", "ab"]
    assert build_bigram_vocab(["ab", "ab"]).tokens == ["[PAD]", "[UNK]", "ab", "b</s>"]  # default 2
    assert build_bigram_vocab(["ab", "cd"]).tokens == ["[PAD]", "[UNK]"]
    assert encode_bigrams(vocab, "ab") == [2, 3]
    assert encode_bigrams(vocab, "bab") == [4, 2, 3]
    assert encode_bigrams(vocab, "ac") == [1, 1]


def test_char_vocabulary_orders_by_count_and_maps_spaces():
    vocab = build_char_vocab(["baa c", "c\u3000"], 1)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[SPACE]"]
    assert vocab.tokens == specials + ["a", "c", "b"]  # a 2, c 2, b 1; spaces are [SPACE]
    assert build_char_vocab(["baa c", "c"], 2).tokens == specials + ["a", "c"]
    assert encode_chars(vocab, "ab\u3000z") == [6, 8, 5, 1]
    assert [vocab.id_of(r) for r in ("pad", "unk", "cls", "sep", "mask", "space")] == list(range(6))


def test_vocab_checks_and_lowercase_lookup():
    with pytest.raises(ValueError, match="missing"):
        Vocab(["a"], {"pad": "[PAD]"})
    with pytest.raises(ValueError, match="duplicate"):
        Vocab(["[UNK]", "a", "a"], {"unk": "[UNK]"})
    vocab = Vocab(["[UNK]", "A", "a", "b"], {"unk": "[UNK]"}, lowercase=True)
    assert vocab.lookup("A") == 1  # an exact match wins over the lowercase form
    assert vocab.lookup("a") == 2 and vocab.lookup("B") == 3 and vocab.lookup("C") == 0
    strict = Vocab(["[UNK]", "b"], {"unk": "[UNK]"})
    assert strict.lookup("B") == 0
    again = Vocab.from_dict(vocab.to_dict())
    assert again == vocab and again.lowercase is True and again.lookup("B") == 3


def test_tokenizer_vocabulary_space_token_fallbacks():
    base = {"[PAD]": 0, "[UNK]": 1, "a": 2}
    specials = {"pad": "[PAD]", "unk": "[UNK]"}
    both = char_vocab_from_tokenizer_vocab({**base, "[unused1]": 3, "[SPACE]": 4}, specials, False)
    assert both.specials["space"] == "[unused1]"
    only = char_vocab_from_tokenizer_vocab({**base, "[SPACE]": 3}, specials, True)
    assert only.specials["space"] == "[SPACE]" and only.id_of("space") == 3 and only.lowercase
    neither = char_vocab_from_tokenizer_vocab(base, specials, False)
    assert neither.specials["space"] == "[UNK]" and neither.id_of("space") == 1
    given = char_vocab_from_tokenizer_vocab({**base, "[unused1]": 3, "_": 4},
                                            {**specials, "space": "_"}, False)
    assert given.specials["space"] == "_"
    assert neither.tokens == ["[PAD]", "[UNK]", "a"]
    with pytest.raises(ValueError, match="contiguous"):
        char_vocab_from_tokenizer_vocab({"[PAD]": 0, "[UNK]": 2}, specials, False)


# --------------------------------------------------------------------------- BIO and submissions

def test_spans_to_tags_detects_overlaps_of_short_spans_and_out_of_range_ends():
    assert spans_to_tags(5, [(0, 1, "a"), (2, 3, "b")]) == ["B-a", "I-a", "B-b", "I-b", "O"]
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags(5, [(0, 2, "a"), (2, 3, "b")])
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags(5, [(1, 1, "a"), (1, 1, "b")])
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags(5, [(0, 1, "a"), (1, 1, "b")])
    with pytest.raises(ValueError, match="outside"):
        spans_to_tags(3, [(1, 3, "x")])
    with pytest.raises(ValueError, match="outside"):
        spans_to_tags(3, [(2, 1, "x")])


def test_format_submission_refuses_mismatched_lengths():
    with pytest.raises(ValueError):
        format_submission(["ab"], [["O"]])
    with pytest.raises(ValueError):
        format_submission(["ab", "c"], [["O", "O"]])
    assert format_submission(["ab"], [["B-1", "I-1"]]) == "a B-1\nb I-1\n\n"


@pytest.mark.parametrize("content", ["a O", "a O\n", "a O\nb O", "a O\nb O\n", "a O\nb O\n\nx",
                                     "a O\nb O\n\n\n", ""])
def test_validate_submission_reports_cut_or_padded_files_as_submission_errors(content):
    with pytest.raises(SubmissionError):
        validate_submission(content, ["ab"])


def test_validate_submission_accepts_the_exact_layout():
    validate_submission("a B-1\nb I-1\n\nc O\n\n", ["ab", "c"], labels=["1"])


def test_parse_title_lines_and_separator_checks():
    titles, report = parse_title_lines("a b\nc\n\n", "t.txt")
    assert titles == [Title("a b", (), 1), Title("c", (), 2)]
    assert report.trailing_blank_lines == 1
    with pytest.raises(InputFormatError):
        parse_bio("aXO\n\n", "b.txt")
    titles, _ = parse_bio("a\tO\nb\tB-1\n\n", "b.txt")
    assert titles == [Title("ab", ((1, 1, "1"),), 1)]


# --------------------------------------------------------------------------- lexicon, glyphs

def test_lexicon_helpers_boundaries():
    titles = [("小米手机", [(0, 1, "1"), (2, 2, "4"), (2, 3, "4")]), ("小米 ", [(0, 1, "1"), (2, 2, "2")])]
    assert build_lexicon(titles) == {"小米": {"1": 2}, "手机": {"4": 1}}
    assert build_lexicon(titles, min_length=1) == {"小米": {"1": 2}, "手": {"4": 1}, "手机": {"4": 1}}
    assert build_lexicon(titles, min_count=2) == {"小米": {"1": 2}}
    lexicon = {"ab": {"4": 3}, "cd": {"4": 4}, "ef": {"1": 1, "2": 5}}
    assert select_entries(lexicon, "rare_single", 3) == {"ab": {"4": 3}}
    assert select_entries(lexicon, "top1") == {"ab": {"4": 3}, "cd": {"4": 4}, "ef": {"2": 5}}
    assert select_entries(lexicon, "all") == lexicon
    with pytest.raises(ValueError, match="mode"):
        select_entries(lexicon, "some")


def test_lexicon_matcher_without_entries_and_with_one_entry():
    assert LexiconMatcher({}, ["1", "4"]).features("ab", 2) == [[0, 0], [0, 0]]
    assert LexiconMatcher({"x": {"9": 1}}, ["1"]).features("x", 1) == [[0]]  # unknown type only
    one = LexiconMatcher({"bc": {"4": 1}}, ["1", "4"])
    assert one.features("abcd", 2) == [[0, 0], [3, 0], [4, 0], [0, 0]]
    assert LexiconMatcher.num_features(3) == 7


def test_titles_are_spread_evenly_over_seeded_folds():
    folds = fold_of_titles([5, 3, 9, 1, 7, 2, 8], 3, seed=4)
    assert sorted(folds) == [1, 2, 3, 5, 7, 8, 9]
    sizes = sorted(list(folds.values()).count(k) for k in range(3))
    assert sizes == [2, 2, 3]
    assert fold_of_titles([1, 2, 3, 5, 7, 8, 9], 3, seed=4) == folds  # input order does not matter
    assert any(fold_of_titles(range(40), 4, seed=s) != fold_of_titles(range(40), 4, seed=4)
               for s in (5, 6))


def test_glyph_depth_is_honoured():
    assert glyph_sequences("蝶", 1) == [["虫", "枼"]]
    assert glyph_sequences("蝶a", 2)[0][:2] == ["虫", "枼"] and len(glyph_sequences("蝶", 2)[0]) > 2
    assert glyph_sequences("a", 1) == [["[NONE]"]]


# --------------------------------------------------------------------------- windows, overlaps

def test_window_starts_stride_bounds():
    assert window_starts(10, 4, 4) == [0, 4, 8]
    assert window_starts(6, 4, 1) == [0, 1, 2]
    assert window_starts(4, 4, 2) == [0]
    for stride in (0, 5, -1):
        with pytest.raises(ValueError):
            window_starts(10, 4, stride)


def test_merge_windows_edge_rules():
    # a window's first character is a cut only when the window does not start the title
    assert merge_windows([(0, 4, 6, [(0, 1, 0, 1.0)])]) == [(0, 1, 0, 1.0)]
    assert merge_windows([(1, 4, 6, [(0, 1, 0, 1.0)])]) == []
    assert merge_windows([(1, 4, 6, [(1, 2, 0, 1.0)])]) == [(2, 3, 0, 1.0)]
    # its last character is a cut only when the window ends before the title does
    assert merge_windows([(2, 4, 6, [(2, 3, 0, 1.0)])]) == [(4, 5, 0, 1.0)]
    assert merge_windows([(0, 4, 6, [(2, 3, 0, 1.0)])]) == []
    assert merge_windows([(1, 4, 6, [(2, 3, 0, 1.0)])]) == []
    assert merge_windows([(0, 4, 4, [(2, 3, 0, 1.0)])]) == [(2, 3, 0, 1.0)]
    # a span in the overlap predicted by both windows: the highest score, whichever comes first
    wins = [(0, 4, 8, [(2, 3, 1, 3.0)]), (2, 4, 8, [(0, 1, 1, 1.0)])]
    assert merge_windows(wins) == [(2, 3, 1, 3.0)]
    assert merge_windows(wins[::-1]) == [(2, 3, 1, 3.0)]
    # same cells, different types: both kept; results sorted
    assert merge_windows([(0, 6, 6, [(3, 4, 1, 0.5), (3, 4, 0, 0.7), (0, 0, 1, 0.2)])]) == [
        (0, 0, 1, 0.2), (3, 4, 0, 0.7), (3, 4, 1, 0.5)]
    # three windows: a mid-title entity vouched for by the windows on each side
    title = [(0, 4, 10, [(3, 3, 0, 1.0)]), (3, 4, 10, [(0, 0, 0, 2.0), (1, 3, 1, 1.5)]),
             (6, 4, 10, [(0, 3, 1, 0.5)])]
    assert merge_windows(title) == [(3, 3, 0, 2.0)]


def test_overlap_resolution_tie_rules():
    long_low, short_high = (0, 4, 0, 0.1), (1, 2, 1, 5.0)
    assert resolve_overlaps([short_high, long_low], "longest_first") == [long_low]
    assert resolve_overlaps([short_high, long_low], "greedy_score") == [short_high]
    # longest_first: equal lengths -> higher score; equal score too -> leftmost
    assert resolve_overlaps([(0, 2, 0, 0.3), (1, 3, 1, 0.9)], "longest_first") == [(1, 3, 1, 0.9)]
    assert resolve_overlaps([(1, 3, 1, 0.5), (0, 2, 0, 0.5)], "longest_first") == [(0, 2, 0, 0.5)]
    # a span of length 3 at position 5 against one of length 2 at 0: length, not position
    assert resolve_overlaps([(4, 5, 0, 0.9), (5, 7, 1, 0.1)], "longest_first") == [(5, 7, 1, 0.1)]
    # first_come: leftmost; same start -> longest; same span -> higher score
    assert resolve_overlaps([(1, 3, 0, 0.9), (0, 1, 1, 0.1)], "first_come") == [(0, 1, 1, 0.1)]
    assert resolve_overlaps([(0, 1, 0, 0.9), (0, 3, 1, 0.1)], "first_come") == [(0, 3, 1, 0.1)]
    assert resolve_overlaps([(0, 1, 0, 0.2), (0, 1, 1, 0.8)], "first_come") == [(0, 1, 1, 0.8)]
    # greedy_score: equal scores -> leftmost start, then the earlier end
    assert resolve_overlaps([(1, 3, 1, 0.5), (0, 2, 0, 0.5)], "greedy_score") == [(0, 2, 0, 0.5)]
    assert resolve_overlaps([(2, 4, 0, 0.5), (2, 3, 1, 0.5)], "greedy_score") == [(2, 3, 1, 0.5)]
    # non-overlapping spans all kept, in position order
    spans = [(5, 6, 0, 0.1), (0, 1, 1, 0.2), (2, 4, 0, 0.3)]
    for how in ("greedy_score", "longest_first", "first_come"):
        assert resolve_overlaps(spans, how) == sorted(spans)
    with pytest.raises(ValueError, match="overlap"):
        resolve_overlaps(spans, "shortest")


def test_whitespace_trim_keeps_one_character_and_goes_on_after_a_span_of_spaces():
    text = "a b c"
    spans = [(1, 1, 0, 0.9), (1, 2, 1, 0.5), (3, 4, 0, 0.4)]  # " ", " b", " c"
    assert clean_whitespace(spans, text, "trim") == [(2, 2, 1, 0.5), (4, 4, 0, 0.4)]
    assert clean_whitespace(spans, text, "drop") == []
    assert decode_title(spans, text, {"whitespace": "keep", "overlap": "greedy_score"}) == [
        (1, 1, 0, 0.9), (3, 4, 0, 0.4)]
    assert decode_title(spans, text, {"whitespace": "drop", "overlap": "greedy_score"}) == []
    assert decode_title(spans, text, {"whitespace": "trim", "overlap": "longest_first"}) == [
        (2, 2, 1, 0.5), (4, 4, 0, 0.4)]
    overlapping = [(0, 4, 0, 0.1), (1, 2, 1, 5.0)]
    assert decode_title(overlapping, "abcde", {"whitespace": "keep", "overlap": "longest_first"}) == [
        (0, 4, 0, 0.1)]
    assert decode_title(overlapping, "abcde", {"whitespace": "keep", "overlap": "greedy_score"}) == [
        (1, 2, 1, 5.0)]


def test_lexicon_prefers_the_longer_of_two_matches_starting_at_one_character():
    matcher = LexiconMatcher({"ab": {"1": 5}, "abc": {"4": 1}}, ["1", "4"])
    assert matcher.features("abc", 1) == [[3], [4], [4]]  # B-4, I-4, I-4: the 3-char match
    assert matcher.features("abc", 2) == [[3, 1], [4, 2], [4, 0]]


def test_gp_loss_is_stable_with_scores_far_apart_in_different_rows():
    scores = torch.full((1, 2, 3, 3), -5.0)
    mask = torch.tensor([[False, True, True]])
    valid = valid_cells(mask)
    labels = torch.zeros(1, 2, 3, 3, dtype=torch.bool)
    labels[0, 0, 1, 1] = True
    scores[0, 0, 1, 1] = 200.0  # a confident gold cell of type 0
    scores[0, 1, 1, 1] = 200.0  # a confident wrong cell of type 1
    loss = multilabel_gp_loss(scores, labels, valid, reduction="none")
    type0 = math.log1p(2 * math.exp(-5)) + math.log1p(math.exp(-200))
    type1 = 200 + math.log1p(2 * math.exp(-205))
    assert loss[0].tolist() == pytest.approx([type0, type1], rel=1e-6)
