"""Read Baidu LAC-small, the lexical analyser that ships inside jieba (``jieba/lac_small``).

The folder holds ``word.dic`` (id, character), ``tag.dic`` (id, tag) and
``model_baseline/``: one Paddle ``LoDTensor`` file per parameter. Everything here is
plain numpy and stdlib, so the weights can be read without Paddle, protobuf or importing
jieba (importing ``jieba.lac_small`` would pull in Paddle).

The network (``jieba/lac_small/nets.py``) is: embedding -> 2 x [fc -> GRU forward,
fc -> GRU reverse, concat] -> fc -> CRF decoding. Paddle names its layers in creation
order, so ``fc_{2k}``/``gru_{2k}`` are layer k's forward direction and ``fc_{2k+1}``/
``gru_{2k+1}`` its reverse direction; ``fc_4`` gives the emissions.
"""

from __future__ import annotations

import importlib.util
import struct
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OOV = "OOV"
NUM_LAYERS = 2

# Paddle VarType codes for the element types a TensorDesc may declare.
_DTYPES = {5: np.float32, 6: np.float64, 2: np.int32, 3: np.int64}


def lac_dir() -> Path:
    """jieba's ``lac_small`` folder, found without importing jieba (or its Paddle code)."""
    spec = importlib.util.find_spec("jieba")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("jieba is not installed, so LAC-small (jieba/lac_small) is not available")
    folder = Path(next(iter(spec.submodule_search_locations))) / "lac_small"
    if not (folder / "model_baseline").is_dir():
        raise FileNotFoundError(f"{folder} has no model_baseline/ folder; is this jieba >= 0.40?")
    return folder


def jieba_dictionary() -> dict[str, int]:
    """jieba's ``dict.txt``: {word: corpus frequency} (349k words)."""
    from jd_ner.text.words import parse_word_frequencies

    path = lac_dir().parent / "dict.txt"
    with path.open(encoding="utf-8") as lines:
        return parse_word_frequencies(lines, str(path))


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode one protobuf varint at ``pos``; returns (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _parse_tensor_desc(buf: bytes) -> tuple[int, list[int]]:
    """(data_type, dims) from a ``VarType.TensorDesc`` message.

    Field 1 is the data type (varint); field 2 the dims, either packed (wire type 2) or
    one varint per dim (wire type 0). Negative dims never occur in saved parameters.
    """
    data_type, dims, pos = None, [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 1 and wire == 0:
            data_type, pos = _varint(buf, pos)
        elif number == 2 and wire == 0:
            dim, pos = _varint(buf, pos)
            dims.append(dim)
        elif number == 2 and wire == 2:
            size, pos = _varint(buf, pos)
            end = pos + size
            while pos < end:
                dim, pos = _varint(buf, pos)
                dims.append(dim)
        elif wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            pos += size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    if data_type is None:
        raise ValueError("TensorDesc has no data_type")
    return data_type, dims


def read_paddle_tensor(path: str | Path) -> np.ndarray:
    """Read one Paddle ``LoDTensor`` file (as written by ``fluid.io.save_vars``).

    Layout: uint32 version, uint64 lod_level, per level (uint64 byte size + offsets),
    uint32 tensor version, int32 desc size, TensorDesc protobuf, raw little-endian data.
    """
    path = Path(path)
    buf = path.read_bytes()
    try:
        pos = 4  # LoDTensor version
        (lod_level,) = struct.unpack_from("<Q", buf, pos)
        pos += 8
        for _ in range(lod_level):
            (size,) = struct.unpack_from("<Q", buf, pos)
            pos += 8 + size
        pos += 4  # Tensor version
        (desc_size,) = struct.unpack_from("<i", buf, pos)
        pos += 4
        if desc_size < 0 or pos + desc_size > len(buf):
            raise ValueError(f"bad TensorDesc size {desc_size}")
        data_type, dims = _parse_tensor_desc(buf[pos : pos + desc_size])
        pos += desc_size
    except (struct.error, ValueError) as err:
        raise ValueError(f"{path}: not a readable Paddle tensor file ({err})") from err
    if data_type not in _DTYPES:
        raise ValueError(f"{path}: unsupported Paddle data type {data_type}")
    dtype = np.dtype(_DTYPES[data_type]).newbyteorder("<")
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if expected != len(buf) - pos:
        raise ValueError(
            f"{path}: dims {dims} need {expected} bytes of data but the file has {len(buf) - pos}"
        )
    return np.frombuffer(buf, dtype=dtype, offset=pos).reshape(dims).astype(dtype.newbyteorder("="))


def _read_dic(path: Path) -> dict[int, str]:
    """id -> string from a LAC ``.dic`` file (``id<TAB>value`` lines; malformed lines skipped,
    as LAC's own ``load_kv_dict`` does)."""
    out: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").split("\n"):
        parts = line.split("\t")
        if len(parts) == 2:
            out[int(parts[0])] = parts[1]
    return out


@dataclass
class LacWeights:
    """LAC-small's vocabulary, tag set and parameters under readable names.

    ``arrays`` keys: ``embedding``; ``layers.{k}.{fwd,bwd}.proj.{weight,bias}`` (the fc
    before each GRU, weight [in, 3H]); ``layers.{k}.{fwd,bwd}.gru.{weight,bias}`` (Paddle
    layout: weight [H, 3H], bias [1, 3H]); ``emission.{weight,bias}``; ``crf.start``,
    ``crf.end``, ``crf.transitions`` (from -> to).
    """

    vocab: list[str]
    tags: list[str]
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def vocab_index(self) -> dict[str, int]:
        """char -> id (placeholders for unused ids are excluded)."""
        return {w: i for i, w in enumerate(self.vocab) if not w.startswith("[LAC_UNUSED_")}


def read_lac(directory: str | Path | None = None) -> LacWeights:
    """Load LAC-small from ``directory`` (default: the one inside the installed jieba)."""
    folder = Path(directory) if directory is not None else lac_dir()
    words = _read_dic(folder / "word.dic")
    tags = _read_dic(folder / "tag.dic")
    # The embedding has max id + 1 rows; ids that word.dic skips (20939) keep a
    # placeholder so that list index == id.
    vocab = [words.get(i, f"[LAC_UNUSED_{i}]") for i in range(max(words) + 1)]
    tag_list = [tags[i] for i in range(len(tags))]

    model = folder / "model_baseline"
    arrays: dict[str, np.ndarray] = {"embedding": read_paddle_tensor(model / "word_emb")}
    for k in range(NUM_LAYERS):
        for offset, direction in ((0, "fwd"), (1, "bwd")):
            n = 2 * k + offset
            prefix = f"layers.{k}.{direction}"
            arrays[f"{prefix}.proj.weight"] = read_paddle_tensor(model / f"fc_{n}.w_0")
            arrays[f"{prefix}.proj.bias"] = read_paddle_tensor(model / f"fc_{n}.b_0")
            arrays[f"{prefix}.gru.weight"] = read_paddle_tensor(model / f"gru_{n}.w_0")
            arrays[f"{prefix}.gru.bias"] = read_paddle_tensor(model / f"gru_{n}.b_0")
    arrays["emission.weight"] = read_paddle_tensor(model / f"fc_{2 * NUM_LAYERS}.w_0")
    arrays["emission.bias"] = read_paddle_tensor(model / f"fc_{2 * NUM_LAYERS}.b_0")
    crfw = read_paddle_tensor(model / "crfw")
    arrays["crf.start"], arrays["crf.end"], arrays["crf.transitions"] = crfw[0], crfw[1], crfw[2:]

    if arrays["embedding"].shape[0] != len(vocab):
        raise ValueError(
            f"{folder}: word.dic has ids up to {len(vocab) - 1} but word_emb has "
            f"{arrays['embedding'].shape[0]} rows"
        )
    if crfw.shape != (len(tag_list) + 2, len(tag_list)):
        expected = (len(tag_list) + 2, len(tag_list))
        raise ValueError(f"{folder}: crfw has shape {crfw.shape}, expected {expected}")
    return LacWeights(vocab=vocab, tags=tag_list, arrays=arrays)


def _lookup(char: str, vocab_index: Mapping[str, int]) -> int | None:
    """The id of ``char``, trying the raw char first, then NFKC (full-width -> half-width)
    and lower case; None if none of them is in the vocabulary."""
    if char in vocab_index:
        return vocab_index[char]
    folded = unicodedata.normalize("NFKC", char)
    for candidate in (folded, folded.lower(), char.lower()):
        if len(candidate) == 1 and candidate in vocab_index:
            return vocab_index[candidate]
    return None


def lac_char_ids(text: Iterable[str], vocab_index: Mapping[str, int]) -> list[int]:
    """Character ids as LAC maps them: one id per character, unknown -> the ``OOV`` id.

    Beyond LAC's plain lookup, an unknown character is retried after NFKC and lower
    casing (LAC's vocabulary is half-width and lower case; product titles are not).
    Whitespace always maps to ``OOV``, which is how LAC shows it in its own output.
    """
    oov = vocab_index[OOV]
    ids = []
    for char in text:
        found = None if char.isspace() else _lookup(char, vocab_index)
        ids.append(oov if found is None else found)
    return ids


def count_unknown(text: Iterable[str], vocab_index: Mapping[str, int]) -> int:
    """How many non-whitespace characters of ``text`` fall back to ``OOV``."""
    return sum(1 for char in text if not char.isspace() and _lookup(char, vocab_index) is None)


def attach_lac(encoder, char_vocab, weights: LacWeights | None = None) -> dict:
    """Fill a :class:`~jd_ner.modeling.encoder.CharEncoder`'s LAC part: LAC-small's
    weights, and the map from the encoder's character ids to LAC's.

    Returns what the map could not place: vocabulary characters unknown to LAC (they read
    as LAC's ``OOV``) and the specials, which LAC never sees.
    """
    import torch

    weights = weights if weights is not None else read_lac()
    index = weights.vocab_index
    oov = index[OOV]
    specials = set(char_vocab.specials.values())
    ids, unknown = [], []
    for token in char_vocab.tokens:
        if token in specials:
            ids.append(oov)
            continue
        found = _lookup(token, index) if len(token) == 1 and not token.isspace() else None
        if found is None:
            unknown.append(token)
        ids.append(oov if found is None else found)
    from jd_ner.modeling.lac import load_lac_arrays

    load_lac_arrays(encoder.lac, weights.arrays)
    with torch.no_grad():
        encoder.lac_index.copy_(torch.tensor(ids, dtype=torch.long))
    return {"vocabulary": len(char_vocab.tokens) - len(specials), "unknown_to_lac": len(unknown),
            "unknown_examples": unknown[:20]}
