"""Losses over GlobalPointer scores.

Scores are (B, T, L, L); ``valid`` is a boolean mask broadcastable to them. Invalid
cells are removed with ``torch.where(..., -inf)`` before a log-sum-exp, never by
adding a large negative constant: such constants leak into soft labels, divergences
and half-precision arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


def _logsumexp_with_zero(x: torch.Tensor) -> torch.Tensor:
    """log(1 + sum(exp(x))) over the last dim; -inf entries contribute nothing."""
    zeros = torch.zeros_like(x[..., :1])
    return torch.logsumexp(torch.cat([x, zeros], dim=-1), dim=-1)


def _log1p_sum_exp(x: torch.Tensor) -> torch.Tensor:
    """log(1 + sum(exp(x))) over the last dim, without copying ``x`` into a larger tensor.

    Stabilised by m = max(0, max x) (held constant in the backward pass, as logsumexp does);
    -inf entries contribute exp(-inf) = 0 and a zero gradient, even when all are -inf.
    """
    m = x.detach().amax(-1).clamp_min(0.0)
    return m + torch.log(torch.exp(-m) + torch.exp(x - m.unsqueeze(-1)).sum(-1))


def _grouped_log1p_sum_exp(values: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """log(1 + sum of exp(v) over each group's values), for every group 0..n_groups-1."""
    m = torch.zeros(n_groups, dtype=values.dtype, device=values.device).scatter_reduce(
        0, groups, values.detach(), "amax", include_self=True)  # >= 0: the 1 is exp(0)
    sums = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add(
        0, groups, torch.exp(values - m[groups]))
    return m + torch.log(torch.exp(-m) + sums)


def multilabel_gp_loss(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                       reduction: str = "mean") -> torch.Tensor:
    """Multilabel categorical cross-entropy per (sample, type) over valid cells.

    log(1 + sum_neg e^s) + log(1 + sum_pos e^-s)  (kexue.fm/archives/7359).
    Returns the mean over samples and types, or the (B, T) matrix with ``reduction='none'``.

    The positive term reads only the gold cells (a handful per title, gathered), not a
    dense copy of every cell: on JD titles that halves the loss's cost.
    """
    b, t = scores.shape[:2]
    scores = scores.float()
    pos = labels.bool() & valid
    neg_term = _log1p_sum_exp(scores.masked_fill(~valid | pos, NEG_INF).flatten(2))
    bi, ti, cell = pos.flatten(2).nonzero(as_tuple=True)
    pos_scores = scores.flatten(2)[bi, ti, cell]
    pos_term = _grouped_log1p_sum_exp(-pos_scores, bi * t + ti, b * t).view(b, t)
    loss = neg_term + pos_term
    return loss.mean() if reduction == "mean" else loss


def soft_label_gp_loss(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                       epsilon: float, reduction: str = "mean") -> torch.Tensor:
    """Label-smoothed multilabel cross-entropy (kexue.fm/archives/9064).

    p = y(1 - eps) + eps/2 per valid cell;
    loss = log(1 + sum e^{s + log(1-p)}) + log(1 + sum e^{-s + log p}) over valid cells.
    With eps = 0, log(1-p) is -inf on positives and log p is -inf on negatives, so
    this is exactly :func:`multilabel_gp_loss`.
    """
    b, t = scores.shape[:2]
    scores = scores.float()
    valid = valid.expand_as(scores)
    p = labels.float() * (1.0 - epsilon) + epsilon / 2.0
    neg_logit = torch.where(valid, scores + torch.log1p(-p), NEG_INF)
    pos_logit = torch.where(valid, -scores + torch.log(p), NEG_INF)
    loss = _logsumexp_with_zero(neg_logit.reshape(b, t, -1)) + _logsumexp_with_zero(
        pos_logit.reshape(b, t, -1))
    return loss.mean() if reduction == "mean" else loss


def gp_divergence(s: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """R-Drop divergence for GP scores (kexue.fm/archives/9039), per (sample, type): (B, T).

    D(s, t) = sum over the type's valid cells of (sigmoid(s) - sigmoid(t)) * (s - t). It is
    symmetric, zero for s = t and non-negative. Invalid cells are zeroed in the *inputs*,
    before any arithmetic: a padded cell holding inf (fp16 overflow) would otherwise give
    inf - inf = NaN, and a NaN gradient survives masking the product afterwards. Logits
    are not clipped: clipping them (as the write-up does) zeroes the gradient on every
    negative score.
    """
    mask = valid.expand_as(s)
    s = torch.where(mask, s.float(), 0.0)
    t = torch.where(mask, t.float(), 0.0)
    cell = (torch.sigmoid(s) - torch.sigmoid(t)) * (s - t)
    return cell.flatten(2).sum(-1)


def rdrop_loss(s: torch.Tensor, t: torch.Tensor, valid: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha/4 * mean over (sample, type) of D(s, t) + D(t, s): the write-up's units.

    (Averaging over samples only, and summing over types, would weigh the same alpha
    T times more: 51 times on the JD label set.)
    """
    return alpha / 4.0 * (gp_divergence(s, t, valid) + gp_divergence(t, s, valid)).mean()


def simcse_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over two views (kexue.fm/archives/8348).

    The 2B pooled vectors form a 2B x 2B cosine matrix / tau with self-pairs masked;
    the target of row i is its other view. Mean over the 2B rows.
    """
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=-1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, NEG_INF)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)
