"""Character and character-bigram vocabularies.

The model reads one token per character. A vocabulary is a plain list of token
strings plus the names of its special tokens, so it serialises to JSON and travels
inside a saved model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CHAR_SPECIALS = {
    "pad": "[PAD]",
    "unk": "[UNK]",
    "cls": "[CLS]",
    "sep": "[SEP]",
    "mask": "[MASK]",
    "space": "[SPACE]",
}
BIGRAM_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]"}
END = "</s>"  # right neighbour of a title's last character in its bigram


@dataclass
class Vocab:
    """Token strings with their ids (list position) and named special tokens."""

    tokens: list[str]
    specials: dict[str, str]
    lowercase: bool = False  # try ``c.lower()`` for characters missing as they are
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.index = {tok: i for i, tok in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            dup = [t for t, n in Counter(self.tokens).items() if n > 1][:5]
            raise ValueError(f"vocabulary has duplicate tokens, e.g. {dup}")
        missing = [t for t in self.specials.values() if t not in self.index]
        if missing:
            raise ValueError(f"special tokens missing from the vocabulary: {missing}")

    def __len__(self) -> int:
        return len(self.tokens)

    def id_of(self, role: str) -> int:
        return self.index[self.specials[role]]

    def lookup(self, token: str) -> int:
        idx = self.index.get(token)
        if idx is None and self.lowercase:
            idx = self.index.get(token.lower())
        return self.id_of("unk") if idx is None else idx

    def to_dict(self) -> dict:
        return {"tokens": list(self.tokens), "specials": dict(self.specials), "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, data: Mapping) -> Vocab:
        return cls(list(data["tokens"]), dict(data["specials"]), bool(data.get("lowercase", False)))


def _char_key(char: str) -> str:
    # Every whitespace character is the same token: its kind matters, not its code point.
    return CHAR_SPECIALS["space"] if char.isspace() else char


def build_char_vocab(texts: Iterable[str], min_count: int = 1) -> Vocab:
    """Characters seen at least ``min_count`` times, most frequent first, after the specials."""
    counts = Counter(_char_key(c) for text in texts for c in text)
    specials = list(CHAR_SPECIALS.values())
    kept = sorted((c for c, n in counts.items() if n >= min_count and c not in specials),
                  key=lambda c: (-counts[c], c))
    return Vocab(specials + kept, dict(CHAR_SPECIALS))


def char_vocab_from_tokenizer_vocab(vocab: Mapping[str, int], specials: Mapping[str, str],
                                    lowercase: bool) -> Vocab:
    """A character vocabulary over a pretrained tokenizer's ids (its token list, in id order).

    Multi-character tokens stay in the list (ids must not move) but are never produced:
    the model is still driven one character per token.
    """
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError("tokenizer ids are not contiguous from 0")
    roles = dict(specials)
    if "space" not in roles or roles["space"] not in vocab:
        roles["space"] = next((t for t in ("[unused1]", "[SPACE]") if t in vocab), roles["unk"])
    return Vocab(tokens, roles, lowercase)


def encode_chars(vocab: Vocab, text: str) -> list[int]:
    """One id per character of ``text``."""
    space = vocab.id_of("space")
    return [space if c.isspace() else vocab.lookup(c) for c in text]


def bigrams(text: str) -> list[str]:
    """Each character with its right neighbour; whitespace is normalised to one space."""
    norm = ["\u0020" if c.isspace() else c for c in text]
    return [a + b for a, b in zip(norm, norm[1:] + [END], strict=True)]


def build_bigram_vocab(texts: Iterable[str], min_count: int = 2) -> Vocab:
    counts = Counter(bg for text in texts for bg in bigrams(text))
    kept = sorted((b for b, n in counts.items() if n >= min_count), key=lambda b: (-counts[b], b))
    specials = list(BIGRAM_SPECIALS.values())
    return Vocab(specials + kept, dict(BIGRAM_SPECIALS))


def encode_bigrams(vocab: Vocab, text: str) -> list[int]:
    return [vocab.lookup(bg) for bg in bigrams(text)]
