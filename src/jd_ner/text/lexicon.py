"""Entity lexicon (the write-up's GPKG knowledge) and its matches in titles.

The lexicon maps entity strings seen in the **train split** to their type counts. Titles are
matched against it with an Aho-Corasick automaton (every occurrence, overlaps included);
each matched character gets feature ids for (type, B/I) of the match, which the model
embeds and adds to its features. Which types a match contributes depends on the mode:

* ``all``: every type the string was annotated with;
* ``top1``: only its most frequent type;
* ``rare_single``: only strings annotated with a single type at most ``rare_max_count``
  times (the write-up's "low-frequency single-type knowledge").

The train split's own titles are matched against an **out-of-fold** lexicon (built from the
other folds of the train split): matched against a lexicon built from its own labels, every
train entity is found with its gold type, far more often than on new titles, and the model
learns to trust the lexicon more than it deserves.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

MODES = ("all", "top1", "rare_single")


def build_lexicon(titles: Iterable[tuple[str, Sequence[tuple[int, int, str]]]],
                  min_count: int = 1, min_length: int = 2) -> dict[str, dict[str, int]]:
    """``{entity string: {type: count}}`` from annotated titles."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for text, spans in titles:
        for start, end, label in spans:
            string = text[start : end + 1]
            if len(string) >= min_length and string.strip():
                counts[string][label] += 1
    return {s: dict(sorted(c.items())) for s, c in sorted(counts.items())
            if sum(c.values()) >= min_count}


def select_entries(lexicon: Mapping[str, Mapping[str, int]], mode: str,
                   rare_max_count: int = 3) -> dict[str, dict[str, int]]:
    """The types (with their counts) each string contributes under ``mode``; strings
    contributing none are left out."""
    if mode not in MODES:
        raise ValueError(f"unknown lexicon mode {mode!r}; known: {MODES}")
    out = {}
    for string, counts in lexicon.items():
        if mode == "all":
            types = sorted(counts)
        elif mode == "top1":
            types = [max(sorted(counts), key=lambda t: counts[t])]
        else:
            types = sorted(counts) if len(counts) == 1 and sum(counts.values()) <= rare_max_count \
                else []
        if types:
            out[string] = {t: int(counts[t]) for t in types}
    return out


def fold_of_titles(title_ids: Sequence[int], folds: int, seed: int) -> dict[int, int]:
    """A seeded assignment of titles to ``folds`` folds of (nearly) equal size."""
    order = sorted(int(t) for t in title_ids)
    random.Random(seed).shuffle(order)
    return {tid: k % folds for k, tid in enumerate(order)}


class LexiconMatcher:
    """Per-character (type, B/I) feature ids from lexicon matches.

    Feature id 0 is padding; type index k gives 1 + 2k for B and 2 + 2k for I. When more
    than ``per_char`` ids cover a character, the most informative are kept: those of the
    longest match first, then of the type annotated most often for that string.
    """

    def __init__(self, entries: Mapping[str, Mapping[str, int]], labels: Sequence[str]):
        import ahocorasick

        index = {name: i for i, name in enumerate(labels)}
        self.automaton = ahocorasick.Automaton()
        for string, counts in entries.items():
            ids = tuple((index[t], int(n)) for t, n in counts.items() if t in index)
            if ids:
                self.automaton.add_word(string, (len(string), ids))
        self.empty = len(self.automaton) == 0
        if not self.empty:
            self.automaton.make_automaton()

    @staticmethod
    def num_features(num_labels: int) -> int:
        return 1 + 2 * num_labels

    def features(self, text: str, per_char: int) -> list[list[int]]:
        """Up to ``per_char`` feature ids per character, most informative first, padded with 0."""
        found: list[list[tuple[int, int, int]]] = [[] for _ in text]  # (-length, -count, id)
        if not self.empty:
            for end, (length, ids) in self.automaton.iter(text):
                start = end - length + 1
                for k, count in ids:
                    found[start].append((-length, -count, 1 + 2 * k))
                    for i in range(start + 1, end + 1):
                        found[i].append((-length, -count, 2 + 2 * k))
        out = []
        for candidates in found:
            row: list[int] = []
            for *_, feature in sorted(candidates):
                if feature not in row:
                    row.append(feature)
                if len(row) == per_char:
                    break
            out.append(row + [0] * (per_char - len(row)))
        return out
