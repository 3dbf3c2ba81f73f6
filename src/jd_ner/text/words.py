"""Word knowledge per character, SoftLexicon-style (Ma et al. 2020).

Every dictionary word (jieba's ``dict.txt``: 349k words with corpus frequencies) that
occurs in a title puts its id into the sets of the characters it covers: **B** at its
first character, **M** inside, **E** at its last. Each character keeps up to ``per_set``
words per set, the most frequent first. The model embeds them and averages each set
weighted by the words' frequencies, so "手机壳" tells 手 that a word begins here, 机 that
it is inside one and 壳 that one ends here, with no segmenter's single decision.

Single-character words are left out (every character is one); the word vocabulary is the
dictionary words found in the train split, so every word the model embeds has been seen
in training.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

SETS = ("B", "M", "E")


def parse_word_frequencies(lines: Iterable[str], source: str = "dictionary") -> dict[str, int]:
    """``word freq [pos]`` lines (jieba's ``dict.txt`` layout) -> {word: frequency}.

    A malformed line raises ``ValueError`` naming the source, the line and its content.
    """
    out: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        try:
            word, freq = parts[0], int(parts[1])
        except (IndexError, ValueError):
            raise ValueError(f"{source}:{number}: expected 'word frequency [tag]', got "
                             f"{line.rstrip()!r}") from None
        out[word] = out.get(word, 0) + freq
    return out


def build_word_vocab(texts: Iterable[str], dictionary: Mapping[str, int], min_length: int = 2,
                     max_length: int = 8) -> dict:
    """Dictionary words (``min_length``..``max_length`` characters) occurring in ``texts``,
    with their dictionary frequency and how often they occur, most frequent first."""
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for word in dictionary:
        if min_length <= len(word) <= max_length and not any(c.isspace() for c in word):
            automaton.add_word(word, word)
    seen: Counter = Counter()
    if len(automaton):
        automaton.make_automaton()
        for text in texts:
            seen.update(word for _, word in automaton.iter(text))
    words = sorted(seen, key=lambda w: (-dictionary[w], w))
    return {"words": words, "frequencies": [int(dictionary[w]) for w in words],
            "occurrences": [int(seen[w]) for w in words],
            "min_length": min_length, "max_length": max_length}


class WordMatcher:
    """Per-character B/M/E word-id sets from a word vocabulary (ids from 1; 0 pads)."""

    def __init__(self, words: Iterable[str]):
        import ahocorasick

        self.automaton = ahocorasick.Automaton()
        for i, word in enumerate(words, 1):
            self.automaton.add_word(word, (len(word), i))
        self.empty = len(self.automaton) == 0
        if not self.empty:
            self.automaton.make_automaton()

    def features(self, text: str, per_set: int) -> list[list[int]]:
        """``3 * per_set`` ids per character: its B, M and E sets, each the ``per_set``
        lowest ids (the vocabulary is ordered most frequent first), padded with 0."""
        sets = [([], [], []) for _ in text]
        if not self.empty:
            for end, (length, i) in self.automaton.iter(text):
                start = end - length + 1
                sets[start][0].append(i)
                for k in range(start + 1, end):
                    sets[k][1].append(i)
                sets[end][2].append(i)
        out = []
        for char_sets in sets:
            row: list[int] = []
            for ids in char_sets:
                kept = sorted(set(ids))[:per_set]
                row += kept + [0] * (per_set - len(kept))
            out.append(row)
        return out
