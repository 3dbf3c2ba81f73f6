"""Training objectives. ``baseline`` is the GlobalPointer multilabel cross-entropy;
tricks change what is computed per batch and are switched on by configuration."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from jd_ner.modeling.heads import valid_cells
from jd_ner.modeling.losses import multilabel_gp_loss
from jd_ner.modeling.model import NerModel


class Objective:
    """Computes the training loss of a batch and the parts worth logging."""

    def __init__(self, cfg: Mapping):
        self.cfg = dict(cfg)

    def __call__(self, model: NerModel, batch: dict[str, torch.Tensor]):
        scores = model(batch)
        loss = multilabel_gp_loss(scores, batch["labels"], valid_cells(batch["char_mask"]))
        return loss, {"loss_main": loss.detach()}


def build_objective(cfg: Mapping, model: NerModel) -> Objective:
    return Objective(cfg)
