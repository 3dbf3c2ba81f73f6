"""Entity lexicon (the write-up's GPKG knowledge) and its matches in titles.

The lexicon maps entity strings seen in the **train split** to their type counts. Titles are
matched against it with an Aho-Corasick automaton (every occurrence, overlaps included);
each matched character gets feature ids for (type, B/I) of the match, which the model
embeds and adds to its features. Which types a match contributes depends on the mode:

* ``all``: every type the string was annotated with;
* ``top1``: only its most frequent type;
* ``rare_single``: only strings annotated with a single type at most ``rare_max_count``
  times (the write-up's "low-frequency single-type knowledge").
"""

from __future__ import annotations

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


def select_types(lexicon: Mapping[str, Mapping[str, int]], mode: str,
                 rare_max_count: int = 3) -> dict[str, list[str]]:
    """The types each string contributes under ``mode``; strings contributing none are left out."""
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
            out[string] = types
    return out


class LexiconMatcher:
    """Per-character (type, B/I) feature ids from lexicon matches.

    Feature id 0 is padding; type index k gives 1 + 2k for B and 2 + 2k for I.
    """

    def __init__(self, types_by_string: Mapping[str, Sequence[str]], labels: Sequence[str]):
        import ahocorasick

        index = {name: i for i, name in enumerate(labels)}
        self.automaton = ahocorasick.Automaton()
        for string, types in types_by_string.items():
            ids = tuple(index[t] for t in types if t in index)
            if ids:
                self.automaton.add_word(string, (len(string), ids))
        self.empty = len(self.automaton) == 0
        if not self.empty:
            self.automaton.make_automaton()

    @staticmethod
    def num_features(num_labels: int) -> int:
        return 1 + 2 * num_labels

    def features(self, text: str, per_char: int) -> list[list[int]]:
        """Up to ``per_char`` feature ids per character, padded with 0."""
        found: list[set[int]] = [set() for _ in text]
        if not self.empty:
            for end, (length, ids) in self.automaton.iter(text):
                start = end - length + 1
                for k in ids:
                    found[start].add(1 + 2 * k)
                    for i in range(start + 1, end + 1):
                        found[i].add(2 + 2 * k)
        out = []
        for ids in found:
            row = sorted(ids)[:per_char]
            out.append(row + [0] * (per_char - len(row)))
        return out
