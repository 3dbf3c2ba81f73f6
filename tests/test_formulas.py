"""Heads, feature layers and batching pinned against computations written separately here
(loops, explicit rotation matrices), so that a plausible one-line mistake in the code fails."""

import math

import pytest
import torch

from jd_ner.modeling.batching import Collator, Example, length_bucketed_batches
from jd_ner.modeling.feature_layers import CNNSequenceEncoder, LayerFusion
from jd_ner.modeling.heads import EfficientGlobalPointer, GlobalPointer


def rotate(vec, position, base=10000.0):
    """RoPE by hand: pair m = (x[2m], x[2m+1]) turned by position * base^(-2m/d)."""
    d = len(vec)
    out = []
    for m in range(d // 2):
        angle = position * base ** (-2 * m / d)
        x, y = vec[2 * m], vec[2 * m + 1]
        out += [x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle)]
    return out


def test_global_pointer_with_rope_equals_a_hand_computation():
    torch.manual_seed(0)
    hidden, types, d, length = 6, 2, 4, 5
    head = GlobalPointer(hidden, types, d, rope=True)
    h = torch.randn(1, length, hidden)
    w, b = head.dense.weight.detach(), head.dense.bias.detach()
    scores = head(h)[0]
    for t in range(types):
        for i in range(length):
            for j in range(length):
                proj_i = (w @ h[0, i] + b).tolist()
                proj_j = (w @ h[0, j] + b).tolist()
                # layout of the projection: per type, q (d values) then k (d values)
                q = rotate(proj_i[t * 2 * d : t * 2 * d + d], i)
                k = rotate(proj_j[t * 2 * d + d : (t + 1) * 2 * d], j)
                expected = sum(a * c for a, c in zip(q, k, strict=True)) / math.sqrt(d)
                assert scores[t, i, j].item() == pytest.approx(expected, abs=1e-5)


def test_efficient_global_pointer_equals_a_hand_computation():
    torch.manual_seed(1)
    hidden, types, d, length = 6, 3, 4, 4
    head = EfficientGlobalPointer(hidden, types, d, rope=True)
    h = torch.randn(1, length, hidden)
    dense_w, dense_b = head.dense.weight.detach(), head.dense.bias.detach()
    bias_w, bias_b = head.bias.weight.detach(), head.bias.bias.detach()
    scores = head(h)[0]
    proj = [(dense_w @ h[0, i] + dense_b) for i in range(length)]
    for t in range(types):
        for i in range(length):
            for j in range(length):
                # q and k interleave in the shared projection: q = even, k = odd features
                q = rotate(proj[i][0::2].tolist(), i)
                k = rotate(proj[j][1::2].tolist(), j)
                shared = sum(a * c for a, c in zip(q, k, strict=True)) / math.sqrt(d)
                start = (bias_w[2 * t] @ proj[i] + bias_b[2 * t]).item() / 2
                end = (bias_w[2 * t + 1] @ proj[j] + bias_b[2 * t + 1]).item() / 2
                assert scores[t, i, j].item() == pytest.approx(shared + start + end, abs=1e-5)


def test_layer_fusion_softmax_weights_per_token():
    torch.manual_seed(2)
    layers = [torch.randn(1, 3, 4) for _ in range(3)]
    fusion = LayerFusion(4, k=2)
    out = fusion(layers)
    for pos in range(3):
        logits = [(s.weight[0] @ layers[1 + n][0, pos] + s.bias[0]).item()
                  for n, s in enumerate(fusion.scorers)]
        weights = [math.exp(v) / sum(math.exp(u) for u in logits) for v in logits]
        expected = weights[0] * layers[1][0, pos] + weights[1] * layers[2][0, pos]
        assert torch.allclose(out[0, pos], expected.detach(), atol=1e-6)


def test_cnn_sequence_encoder_is_relu_then_max_over_each_kernel():
    torch.manual_seed(3)
    enc = CNNSequenceEncoder(vocab_size=7, embedding_dim=3, filters=2, kernels=(2, 3))
    ids = torch.tensor([[[1, 4, 2, 0], [5, 0, 0, 0]]])  # (B=1, L=2, S=4)
    out = enc(ids)
    assert out.shape == (1, 2, 4)
    emb = enc.embedding.weight.detach()
    for pos in range(2):
        seq = [emb[i] for i in ids[0, pos].tolist()]
        expected = []
        for conv in enc.convs:
            k = conv.kernel_size[0]
            best = []
            for f in range(conv.out_channels):
                values = [sum((conv.weight[f, :, j] * seq[s + j]).sum().item() for j in range(k))
                          + conv.bias[f].item() for s in range(len(seq) - k + 1)]
                best.append(max(0.0, max(values)))
            expected += best
        assert out[0, pos].tolist() == pytest.approx(expected, abs=1e-5)


def test_collator_places_characters_labels_and_masks():
    collate = Collator(pad_id=0, cls_id=2, sep_id=3, num_labels=2, with_bigrams=True,
                       sequences=("pinyin_ids",))
    examples = [Example(0, 0, 3, (7, 8, 9), (4, 5, 6), ((1, 2, 0),),
                        pinyin_ids=((1, 1), (2, 2), (3, 3))),
                Example(1, 0, 1, (7,), (4,), ((0, 0, 1),), pinyin_ids=((9, 9),))]
    batch = collate(examples)
    assert batch["input_ids"].tolist() == [[2, 7, 8, 9, 3], [2, 7, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["char_mask"].tolist() == [[False, True, True, True, False],
                                           [False, True, False, False, False]]
    assert batch["bigram_ids"].tolist() == [[0, 4, 5, 6, 0], [0, 4, 0, 0, 0]]
    assert batch["pinyin_ids"][0].tolist() == [[0, 0], [1, 1], [2, 2], [3, 3], [0, 0]]
    labels = batch["labels"]
    assert labels.sum() == 2 and labels[0, 0, 2, 3] and labels[1, 1, 1, 1]  # char c is token c+1


def test_length_bucketed_batches_cover_every_example_once():
    import random

    examples = [Example(i, 0, n, (1,) * n) for i, n in enumerate([5, 1, 9, 3, 3, 7, 2, 8, 4, 6])]
    batches = length_bucketed_batches(examples, 3, random.Random(0))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(10)) and all(1 <= len(b) <= 3 for b in batches)


def test_bilstm_equals_a_packed_bidirectional_lstm():
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from jd_ner.modeling.encoder import BiLSTM

    torch.manual_seed(4)
    mine, reference = BiLSTM(6, 5, num_layers=2), nn.LSTM(6, 5, num_layers=2, batch_first=True,
                                                           bidirectional=True)
    with torch.no_grad():
        for i, layer in enumerate(mine.layers):
            for direction, suffix in (("ltr", ""), ("rtl", "_reverse")):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(layer[direction], f"{name}_l0").copy_(
                        getattr(reference, f"{name}_l{i}{suffix}"))
    x = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 4, 1])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=7)
    assert torch.allclose(mine(x, lengths), expected, atol=1e-6)
    x[1, 4:] = 1e3  # what stands in the padding changes nothing
    assert torch.allclose(mine(x, lengths), expected, atol=1e-6)


def test_gp_loss_edge_cells_all_positive_or_none():
    from jd_ner.modeling.heads import valid_cells
    from jd_ner.modeling.losses import multilabel_gp_loss

    mask = torch.tensor([[False, True, False, False], [False, True, True, False]])
    valid = valid_cells(mask)
    scores = torch.tensor([1.5, -0.5]).view(2, 1, 1, 1).expand(2, 2, 4, 4).clone()
    scores.requires_grad_(True)
    labels = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    labels[0, 0, 1, 1] = True  # sample 0, type 0: its only valid cell is positive
    loss = multilabel_gp_loss(scores, labels, valid, reduction="none")
    expected = [[math.log(1 + math.exp(-1.5)), math.log(1 + math.exp(1.5))],
                [math.log(1 + 3 * math.exp(-0.5))] * 2]
    assert loss.tolist() == [pytest.approx(row) for row in expected]
    loss.sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[0, 0, 1, 1].item() == pytest.approx(-1 / (1 + math.exp(1.5)))
