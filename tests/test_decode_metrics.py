"""Span decoding, window merging, overlap resolution and entity metrics."""

import torch

from jd_ner.metrics import error_classes, micro_prf, per_type_prf
from jd_ner.modeling.batching import window_starts
from jd_ner.modeling.decode import merge_windows, resolve_overlaps, spans_from_scores
from jd_ner.text.bio import spans_to_tags, tags_to_spans


def test_spans_from_scores_are_character_positions_of_valid_cells():
    scores = torch.full((1, 2, 5, 5), -1.0)
    mask = torch.tensor([[False, True, True, True, False]])
    scores[0, 1, 1, 3] = 2.0  # characters 0..2, type 1
    scores[0, 0, 3, 1] = 5.0  # lower triangle: invalid
    scores[0, 0, 0, 1] = 5.0  # [CLS]: invalid
    assert spans_from_scores(scores, mask) == [[(0, 2, 1, 2.0)]]


def test_overlap_strategies():
    spans = [(0, 3, 0, 1.0), (2, 5, 1, 3.0), (6, 6, 0, 0.5), (0, 1, 2, 2.0)]
    assert resolve_overlaps(spans, "greedy_score") == [(0, 1, 2, 2.0), (2, 5, 1, 3.0),
                                                       (6, 6, 0, 0.5)]
    longest = resolve_overlaps(spans, "longest_first")
    assert (2, 5, 1, 3.0) in longest and (0, 1, 2, 2.0) in longest
    first = resolve_overlaps(spans, "first_come")
    assert first[0] == (0, 3, 0, 1.0) and (2, 5, 1, 3.0) not in first


def test_windows_cover_long_titles_and_merge_without_duplicates():
    assert window_starts(10, 126, 96) == [0]
    starts = window_starts(300, 126, 96)
    assert starts == [0, 96, 192]
    assert starts[-1] + 126 >= 300
    # an entity at characters 100..104 is seen by windows 0 and 96; one cut at window 0's edge
    merged = merge_windows([
        (0, 126, 300, [(100, 104, 0, 1.0), (120, 125, 1, 2.0)]),
        (96, 126, 300, [(4, 8, 0, 1.5), (24, 31, 1, 2.5)]),
    ])
    assert merged == [(100, 104, 0, 1.5), (120, 127, 1, 2.5)]


def test_gold_to_bio_to_spans_scores_f1_one():
    gold_spans = {0: [(0, 1, "4"), (3, 6, "1")], 1: [(2, 2, "9")]}
    lengths = {0: 8, 1: 4}
    gold = {(tid, s, e, t) for tid, spans in gold_spans.items() for s, e, t in spans}
    decoded = {(tid, s, e, t) for tid, spans in gold_spans.items()
               for s, e, t in tags_to_spans(spans_to_tags(lengths[tid], spans))}
    assert micro_prf(decoded, gold).f1 == 1.0


def test_micro_and_per_type_prf():
    gold = {(0, 0, 1, "a"), (0, 3, 4, "b"), (1, 0, 0, "a")}
    pred = {(0, 0, 1, "a"), (0, 3, 4, "a"), (1, 2, 2, "b")}
    m = micro_prf(pred, gold)
    assert (m.tp, m.n_pred, m.n_gold) == (1, 3, 3)
    assert abs(m.f1 - 1 / 3) < 1e-9
    per = per_type_prf(pred, gold)
    assert per["a"].tp == 1 and per["b"].tp == 0


def test_error_classes():
    gold = {(0, 0, 2, "a"), (0, 5, 6, "b"), (0, 9, 9, "c"), (1, 0, 1, "a")}
    pred = {(0, 0, 2, "a"), (0, 5, 6, "a"), (0, 8, 9, "c"), (1, 3, 3, "a"), (1, 1, 2, "b")}
    counts = error_classes(pred, gold)
    assert counts["exact"] == 1
    assert counts["wrong_type"] == 1
    assert counts["wrong_boundary"] == 1
    assert counts["wrong_both"] == 1
    assert counts["spurious"] == 1
    assert counts["missed"] == 0
