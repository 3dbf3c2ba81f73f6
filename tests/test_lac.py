"""LAC-small port: the Paddle tensor reader, and the torch BiGRU-CRF against LAC's outputs."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from jd_ner.lac_files import count_unknown, lac_char_ids, read_lac, read_paddle_tensor
from jd_ner.modeling.lac import LacBiGRU, LacTagger, crf_viterbi, tags_to_words


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tensor_bytes(values: np.ndarray, packed: bool = True, lod: list[list[int]] | None = None) -> bytes:
    """A Paddle LoDTensor file as fluid.io.save_vars writes it (float32 data)."""
    dims = b"".join(_varint(d) for d in values.shape)
    if packed:
        fields = b"\x12" + _varint(len(dims)) + dims
    else:
        fields = b"".join(b"\x10" + _varint(d) for d in values.shape)
    desc = b"\x08\x05" + fields  # data_type = FP32
    lod = lod or []
    head = struct.pack("<IQ", 0, len(lod))
    for level in lod:
        head += struct.pack("<Q", 8 * len(level)) + struct.pack(f"<{len(level)}Q", *level)
    head += struct.pack("<Ii", 0, len(desc)) + desc
    return head + values.astype("<f4").tobytes()


# --- reader ---------------------------------------------------------------------------


@pytest.mark.parametrize("packed", [True, False])
def test_read_paddle_tensor_round_trip(tmp_path, packed):
    values = np.arange(2 * 130, dtype=np.float32).reshape(2, 130) / 7  # 130 needs a 2-byte varint
    path = tmp_path / "fc_0.w_0"
    path.write_bytes(_tensor_bytes(values, packed=packed, lod=[[0, 1, 2]]))
    out = read_paddle_tensor(path)
    assert out.shape == (2, 130) and out.dtype == np.float32
    np.testing.assert_array_equal(out, values)


def test_read_paddle_tensor_truncated_names_file(tmp_path):
    path = tmp_path / "gru_9.w_0"
    path.write_bytes(_tensor_bytes(np.ones((3, 4), np.float32))[:-4])
    with pytest.raises(ValueError, match="gru_9.w_0"):
        read_paddle_tensor(path)
    path.write_bytes(b"\x00" * 10)  # header cut short
    with pytest.raises(ValueError, match="gru_9.w_0"):
        read_paddle_tensor(path)


def test_crf_viterbi_matches_brute_force():
    rng = np.random.default_rng(0)
    emissions, start, end, trans = (rng.normal(size=s) for s in [(4, 3), 3, 3, (3, 3)])

    def score(path):
        s = start[path[0]] + end[path[-1]] + sum(emissions[t, y] for t, y in enumerate(path))
        return s + sum(trans[a, b] for a, b in zip(path, path[1:], strict=False))

    paths = [[a, b, c, d] for a in range(3) for b in range(3) for c in range(3) for d in range(3)]
    assert crf_viterbi(emissions, start, end, trans) == max(paths, key=score)
    assert crf_viterbi(np.zeros((0, 3)), start, end, trans) == []


def test_tags_to_words_follows_lac_parse_result():
    words, labels = tags_to_words(list("我爱北京了啊"), ["r-B", "v-B", "LOC-B", "LOC-I", "O", "O"])
    assert words == ["我", "爱", "北京", "了啊"] and labels == ["r", "v", "LOC", "O"]
    assert tags_to_words([], []) == ([], [])


# --- the real model (needs jieba's bundled files) --------------------------------------


@pytest.fixture(scope="module")
def lac():
    pytest.importorskip("jieba")
    weights = read_lac()
    tagger = LacTagger.from_arrays(weights.arrays).eval()
    return weights, weights.vocab_index, tagger


def analyse(lac, text: str) -> tuple[list[str], list[str]]:
    weights, vocab_index, tagger = lac
    ids = torch.tensor([lac_char_ids(text, vocab_index)])
    path = tagger.decode(ids, torch.tensor([len(text)]))[0]
    return tags_to_words(list(text), [weights.tags[i] for i in path])


def test_files_shapes(lac):
    weights, vocab_index, _ = lac
    assert len(weights.vocab) == 20941 and weights.vocab[20940] == "OOV"
    assert weights.vocab[20939].startswith("[LAC_UNUSED_") and len(weights.tags) == 57
    assert weights.arrays["embedding"].shape == (20941, 128)
    assert weights.arrays["crf.transitions"].shape == (57, 57)
    assert weights.arrays["layers.1.bwd.proj.weight"].shape == (256, 384)


def test_char_ids(lac):
    _, vi, _ = lac
    oov = vi["OOV"]
    # Known raw chars keep their own id (full-width Ｐ is in LAC's vocabulary itself).
    assert lac_char_ids("Ｐ手", vi) == [vi["Ｐ"], vi["手"]]
    # Unknown chars fall back to NFKC / lower case, else OOV; whitespace is always OOV.
    assert lac_char_ids("² 😀\u3000", vi) == [vi["2"], oov, oov, oov]
    assert count_unknown("a²😀 ", vi) == 1


# Expected outputs, with where each comes from. jieba's README prints no paddle-mode
# output for jieba.cut; its posseg paddle example prints "北京 ns / 天安门 ns", the same
# lines as the default-mode example (paddle mode can only emit LAC's tags, i.e. LOC).
# "我/来到/北京清华大学" is what a real jieba paddle-mode run printed in a public note
# (liudongdong1.github.io/stanfordnlp_record, "Paddle模式: 我/来到/北京清华大学").
SEGMENTATIONS = [
    ("乒乓球拍卖完了", "乒乓球/拍卖/完/了"),
    ("我来到北京清华大学", "我/来到/北京清华大学"),
]


@pytest.mark.parametrize(("text", "expected"), SEGMENTATIONS)
def test_paddle_mode_segmentation(lac, text, expected):
    assert "/".join(analyse(lac, text)[0]) == expected


def test_paddle_mode_posseg(lac):
    words, labels = analyse(lac, "我爱北京天安门")
    pairs = list(zip(words, labels, strict=True))
    assert pairs == [("我", "r"), ("爱", "v"), ("北京", "LOC"), ("天安门", "LOC")]


# jieba's README prints 我/来到/北京/清华大学 and 中国/科学技术/大学 for its default
# (dictionary) mode; LAC keeps organisation names whole, as a published paddle-mode run
# shows for the first (我/来到/北京清华大学).
def test_lac_keeps_organisation_names_whole(lac):
    assert analyse(lac, "中国科学技术大学") == (["中国科学技术大学"], ["ORG"])


def _reference_bigru(arrays: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """Step-by-step numpy Paddle BiGRU, written straight from the formulas."""

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    def gru(x, w, b, reverse):
        hidden = w.shape[0]
        flat = w.reshape(-1)
        w_ur = flat[: 2 * hidden * hidden].reshape(hidden, 2 * hidden)
        w_c = flat[2 * hidden * hidden :].reshape(hidden, hidden)
        h = np.zeros(hidden)
        out = np.zeros((len(x), hidden))
        for t in (reversed(range(len(x))) if reverse else range(len(x))):
            g = x[t] + b.reshape(-1)
            u = sigmoid(g[:hidden] + h @ w_ur[:, :hidden])
            r = sigmoid(g[hidden : 2 * hidden] + h @ w_ur[:, hidden:])
            c = np.tanh(g[2 * hidden :] + (r * h) @ w_c)
            h = u * c + (1 - u) * h
            out[t] = h
        return out

    feats = arrays["embedding"][ids].astype(np.float64)
    for k in range(2):
        outs = []
        for direction, reverse in (("fwd", False), ("bwd", True)):
            p = f"layers.{k}.{direction}"
            x = feats @ arrays[f"{p}.proj.weight"] + arrays[f"{p}.proj.bias"]
            outs.append(gru(x, arrays[f"{p}.gru.weight"], arrays[f"{p}.gru.bias"], reverse))
        feats = np.concatenate(outs, axis=1)
    return feats


def test_bigru_matches_step_by_step_reference(lac):
    weights, vi, tagger = lac
    ids = lac_char_ids("华为P40手机壳", vi)
    with torch.no_grad():
        out = tagger.encoder(torch.tensor([ids]), torch.tensor([len(ids)]))[0].double().numpy()
    np.testing.assert_allclose(out, _reference_bigru(weights.arrays, ids), atol=1e-5)


def test_batched_padding_matches_unbatched(lac):
    _, vi, tagger = lac
    encoder: LacBiGRU = tagger.encoder
    texts = ["华为P40手机壳硅胶防摔男女款", "乒乓球拍卖完了", "我", "小米（MI）Redmi Note 12 5G手机"]
    rows = [lac_char_ids(t, vi) for t in texts]
    lengths = torch.tensor([len(r) for r in rows])
    width = int(lengths.max()) + 3  # extra all-padding columns too
    # Pad with a real character id: only the lengths may keep padding out of the states.
    ids = torch.full((len(rows), width), vi["的"])
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
    with torch.no_grad():
        batched = encoder(ids, lengths, all_layers=True)
        for b, row in enumerate(rows):
            single = encoder(torch.tensor([row]), torch.tensor([len(row)]), all_layers=True)
            for layer_b, layer_s in zip(batched, single, strict=True):
                torch.testing.assert_close(layer_b[b, : len(row)], layer_s[0], atol=1e-5, rtol=0)
                assert not layer_b[b, len(row) :].any()
        paths = tagger.decode(ids, lengths)
    assert paths == [tagger.decode(torch.tensor([r]), torch.tensor([len(r)]))[0] for r in rows]
