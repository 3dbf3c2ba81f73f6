"""Several trained models that predict as one: their span probabilities averaged.

Each member scores a cell (start, end, type) with a logit s_i; the ensemble's probability
is p = (1/n) sum_i sigmoid(s_i), the same average the distill pipeline's teachers give
their student. The ensemble returns the logit of p, so it decodes like any model (a cell
is an entity when its score is above the ensemble's threshold; at 0, when p > 1/2) and its
scores stay comparable. Computed as log p - log q with q = mean sigmoid(-s_i) = 1 - p taken
apart, and in log space (logsumexp_i logsigmoid(s_i) - logsumexp_i logsigmoid(-s_i)) where
a mean probability underflows, so it stays finite where a sigmoid would round to 0 or 1.

The members must read titles the same way (vocabularies, windows, features): they are
trained from one configuration with different seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from jd_ner.modeling.model import ModelSpec, NerModel

# a mean probability below it is taken in log space: float32 keeps full precision down to
# about 1e-38, and this leaves a margin
UNDERFLOW = 1e-30
READ_LIKE_FIRST_MEMBER = frozenset({"char_vocab", "bigram_vocab", "pinyin_vocab", "glyph_vocab",
                                    "lexicon_matcher", "word_matcher", "sequence_fields"})


def ensemble_members(config: dict) -> int:
    """How many models the resolved training settings ask for (``ensemble.members``)."""
    return int((config.get("ensemble") or {}).get("members", 1))


def _reading(spec: ModelSpec) -> dict:
    """What decides how a model encodes a title and what its scores mean (not how it was
    trained, nor the threshold each member chose for itself: the ensemble has its own)."""
    data = spec.to_dict()
    data.pop("training")
    data.pop("threshold")
    return data


def mean_probability_logit(scores: torch.Tensor) -> torch.Tensor:
    """logit of the mean of sigmoid(scores) over the first dimension.

    log p - log q with p = mean sigmoid(s) and q = mean sigmoid(-s) (that is 1 - p, taken
    apart so that a p near 1 keeps its precision); where p or q underflows (every member
    beyond about -69 or +69) the cell is computed in log space instead. The log-space form
    alone is exact everywhere but, on a CPU, costs more than the members' forward passes.
    """
    scores = scores.float()
    p, q = torch.sigmoid(scores).mean(0), torch.sigmoid(-scores).mean(0)
    # clamped so that the cells overwritten below never hold log(0) (no inf, nor NaN in a
    # gradient, if this is ever differentiated)
    out = torch.log(p.clamp_min(UNDERFLOW)) - torch.log(q.clamp_min(UNDERFLOW))
    lost = (p < UNDERFLOW) | (q < UNDERFLOW)
    if lost.any():
        out[lost] = log_space_mean_probability_logit(scores[:, lost])
    return out


def log_space_mean_probability_logit(scores: torch.Tensor) -> torch.Tensor:
    """The same, as logsumexp_i logsigmoid(s_i) - logsumexp_i logsigmoid(-s_i)."""
    logsig = nn.functional.logsigmoid
    return torch.logsumexp(logsig(scores), dim=0) - torch.logsumexp(logsig(-scores), dim=0)


class EnsembleModel(nn.Module):
    """Members' averaged probabilities, as a model: it reads titles with the first
    member's vocabularies and settings, which every member shares."""

    def __init__(self, members: Sequence[NerModel], training: dict | None = None,
                 threshold: float = 0.0):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        reading = _reading(members[0].spec)
        for i, member in enumerate(members[1:], start=2):
            if _reading(member.spec) != reading:
                differ = sorted(k for k, v in _reading(member.spec).items() if reading.get(k) != v)
                raise ValueError(f"ensemble member {i} reads titles differently from member 1 "
                                 f"(settings {differ}): members must share one configuration")
        self.members = nn.ModuleList(members)
        self.spec = replace(members[0].spec, training=training, threshold=threshold)

    def __getattr__(self, name: str):
        # how titles are read (vocabularies, feature matchers, input fields): the first
        # member's, which every member shares
        if name in READ_LIKE_FIRST_MEMBER:
            return getattr(self.members[0], name)
        return super().__getattr__(name)

    @property
    def labels(self) -> list[str]:
        return self.spec.labels

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return mean_probability_logit(torch.stack([member(batch).float()
                                                   for member in self.members]))
