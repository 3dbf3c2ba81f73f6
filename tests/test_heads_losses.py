"""GlobalPointer maths: RoPE's relative-position property and the loss against a
brute-force reference."""

import math

import pytest
import torch

from jd_ner.modeling.heads import (
    EfficientGlobalPointer,
    GlobalPointer,
    apply_rope,
    rope_tables,
    valid_cells,
)
from jd_ner.modeling.losses import multilabel_gp_loss


def test_rope_scores_depend_on_relative_position_only():
    torch.manual_seed(0)
    length, dim = 12, 16
    q = torch.randn(dim).expand(length, dim)
    k = torch.randn(dim).expand(length, dim)
    cos, sin = rope_tables(length, dim)
    scores = apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).T
    for offset in range(-length + 1, length):
        diagonal = torch.diagonal(scores, offset)
        assert torch.allclose(diagonal, diagonal[0].expand_as(diagonal), atol=1e-4), offset


def test_rope_rotates_interleaved_pairs():
    # position 1, pair 0 rotates (x0, x1) by angle 1 rad; pair 1 by base^(-2/dim) rad
    dim = 4
    cos, sin = rope_tables(2, dim)
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 2)
    out = apply_rope(x, cos, sin)[1]
    second = 10000 ** (-2 / dim)
    expected = torch.tensor([math.cos(1), math.sin(1), math.cos(second), math.sin(second)])
    assert torch.allclose(out, expected, atol=1e-6)


def test_gp_score_is_scaled_dot_product():
    torch.manual_seed(0)
    head = GlobalPointer(hidden_size=8, num_types=3, head_size=4, rope=False)
    h = torch.randn(2, 5, 8)
    scores = head(h)
    qk = head.dense(h).view(2, 5, 3, 2, 4)
    q, k = qk[..., 0, :], qk[..., 1, :]
    expected = torch.einsum("bitd,bjtd->btij", q, k) / 2.0
    assert scores.shape == (2, 3, 5, 5)
    assert torch.allclose(scores, expected, atol=1e-5)


@pytest.mark.parametrize("head_cls", [GlobalPointer, EfficientGlobalPointer])
def test_heads_share_one_interface(head_cls):
    head = head_cls(hidden_size=16, num_types=5, head_size=8)
    assert head(torch.randn(3, 7, 16)).shape == (3, 5, 7, 7)


def test_valid_cells_upper_triangle_of_real_characters():
    mask = torch.tensor([[False, True, True, True, False, False]])  # [CLS] c c c [SEP] pad
    valid = valid_cells(mask)[0, 0]
    assert valid.sum() == 6  # 3 + 2 + 1
    assert valid[1, 3] and not valid[3, 1] and not valid[0, 1] and not valid[1, 4]


def brute_force_loss(scores, labels, valid):
    total, count = 0.0, 0
    b, t = scores.shape[:2]
    for i in range(b):
        for j in range(t):
            cells = list(zip(scores[i, j].flatten().tolist(), labels[i, j].flatten().tolist(),
                             valid[i, 0].flatten().tolist(), strict=True))
            neg = [math.exp(s) for s, y, v in cells if v and not y]
            pos = [math.exp(-s) for s, y, v in cells if v and y]
            total += math.log(1 + sum(neg)) + math.log(1 + sum(pos))
            count += 1
    return total / count


def test_loss_equals_brute_force_reference():
    torch.manual_seed(1)
    b, t, n = 3, 4, 6
    scores = torch.randn(b, t, n, n) * 3
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[:, 0] = False
    mask[1, 4:] = False
    valid = valid_cells(mask)
    labels = (torch.rand(b, t, n, n) < 0.15) & valid
    got = multilabel_gp_loss(scores, labels, valid).item()
    assert got == pytest.approx(brute_force_loss(scores, labels, valid), rel=1e-5)


def test_loss_ignores_invalid_cells_and_their_gradient():
    torch.manual_seed(2)
    scores = torch.randn(2, 3, 5, 5, requires_grad=True)
    mask = torch.tensor([[False, True, True, False, False]] * 2)
    valid = valid_cells(mask)
    labels = torch.zeros(2, 3, 5, 5, dtype=torch.bool)
    labels[0, 1, 1, 2] = True
    loss = multilabel_gp_loss(scores, labels, valid)
    loss.backward()
    assert torch.isfinite(loss)
    assert (scores.grad[~valid.expand_as(scores)] == 0).all()
    shifted = scores.detach().clone()
    shifted[~valid.expand_as(shifted)] = 1e4  # garbage in invalid cells changes nothing
    assert multilabel_gp_loss(shifted, labels, valid).item() == pytest.approx(loss.item())
