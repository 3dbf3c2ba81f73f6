"""Training objectives: the GlobalPointer loss and the write-up's loss-side tricks.

Everything here is switched by ``train.objective`` (see ``conf/base/parameters_train.yml``),
normally through a ``trick`` preset. With every trick off, the objective is the plain
multilabel cross-entropy of one forward pass.

* label smoothing: soft-label multilabel CE with p = y(1 - eps) + eps/2;
* R-Drop: the batch is duplicated so its two copies get independent dropout masks in one
  forward pass; alpha/4 * mean over (sample, type) of D(s,t) + D(t,s) is added;
* SimCSE: InfoNCE between the two copies' pooled features (shares R-Drop's copies);
* multi-sample dropout: K dropout masks on the features before the head, losses averaged;
* mixup: each row blended with a permuted row (lambda ~ Beta(alpha, alpha)), at the input
  embeddings or the encoder output, over the union of both rows' characters; loss
  lambda * L(y) + (1 - lambda) * L(y_perm).
* auxiliary heads (training only): a 1-type GP for "any entity" (``boundary``) and one for
  the main type (``main_entity``), each loss weighted;
* soft targets (a distilled student, the ``distill`` pipeline): on titles whose batch rows
  carry a teacher's probabilities p, the soft-label multilabel CE with those p is a task of
  weight ``distill.weight`` beside the gold loss (rows without gold, unlabelled titles, have
  gold weight 0 but still count in the gold mean's B x T); mixup mixes the soft losses as it
  mixes the gold ones. Its optimum for a lone cell is s = logit(p) / 2 (d/ds of
  log(1 + (1-p)e^s) + log(1 + p e^-s) vanishes at (1-p)e^2s = p): the teachers' decisions,
  half their log-odds;
* ``weighting: logsum``: the task losses (main and auxiliary) are combined as
  sum_t log(max(L_t, eps)) instead of sum_t w_t L_t. Its gradient weights task t by 1/L_t,
  which grows without bound as L_t nears 0: eps caps it. Regularisers (R-Drop, SimCSE)
  are added with their own weights either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from jd_ner.modeling.heads import valid_cells
from jd_ner.modeling.losses import multilabel_gp_loss, rdrop_loss, simcse_loss, soft_label_gp_loss
from jd_ner.modeling.model import NerModel

DEFAULTS = {
    "label_smoothing": 0.0,
    "rdrop": {"enabled": False, "alpha": 0.5},
    "simcse": {"enabled": False, "weight": 0.1, "temperature": 0.05, "pooling": "mean"},
    "multisample_dropout": {"enabled": False, "samples": 4, "p": 0.3},
    "mixup": {"enabled": False, "alpha": 0.5, "layer": "encoder", "probability": 0.5},
    "boundary": {"enabled": False, "weight": 0.5},
    "main_entity": {"enabled": False, "type": "4", "weight": 0.5},
    "distill": {"weight": 1.0},
    "weighting": "sum",
    "logsum_eps": 1e-7,
}
WEIGHTINGS = ("sum", "logsum")
MIX_LAYERS = ("embeddings", "encoder")
POOLINGS = ("mean", "cls")


@dataclass
class Mixer:
    """Blends row i with row perm[i]: x -> lam * x + (1 - lam) * x[perm]."""

    lam: float
    perm: torch.Tensor
    layer: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.lam * x + (1.0 - self.lam) * x[self.perm]

    def union(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.maximum(mask, mask[self.perm])


def duplicate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch twice over (rows 0..B-1, then the same rows again)."""
    return {k: torch.cat([v, v], dim=0) for k, v in batch.items()}


def pool(h: torch.Tensor, char_mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        return h[:, 0]
    weights = char_mask.unsqueeze(-1).to(h.dtype)
    return (h * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def merged_config(cfg: Mapping) -> dict:
    """``cfg`` over :data:`DEFAULTS`, checked: unknown keys and bad values fail early."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in DEFAULTS.items()}
    for key, value in (cfg or {}).items():
        if key not in out:
            raise ValueError(f"unknown objective setting {key!r}; known: {sorted(out)}")
        if isinstance(out[key], dict):
            unknown = set(value) - set(out[key])
            if unknown:
                raise ValueError(f"unknown objective.{key} settings {sorted(unknown)}; "
                                 f"known: {sorted(out[key])}")
            out[key].update(value)
        else:
            out[key] = value
    if not 0.0 <= float(out["label_smoothing"]) < 1.0:
        raise ValueError("objective.label_smoothing must be in [0, 1)")
    if out["mixup"]["layer"] not in MIX_LAYERS:
        raise ValueError(f"objective.mixup.layer must be one of {MIX_LAYERS}")
    if out["simcse"]["pooling"] not in POOLINGS:
        raise ValueError(f"objective.simcse.pooling must be one of {POOLINGS}")
    if out["weighting"] not in WEIGHTINGS:
        raise ValueError(f"objective.weighting must be one of {WEIGHTINGS}")
    if int(out["multisample_dropout"]["samples"]) < 1:
        raise ValueError("objective.multisample_dropout.samples must be >= 1")
    return out


def combine_tasks(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float],
                  weighting: str, eps: float) -> torch.Tensor:
    """sum_t w_t L_t, or sum_t log(max(L_t, eps)) (log-sum multitask weighting)."""
    if weighting == "logsum":
        return sum(torch.log(torch.clamp(loss, min=eps)) for loss in losses.values())
    return sum(weights[name] * loss for name, loss in losses.items())


class Objective:
    """Computes a batch's training loss and the parts worth logging."""

    def __init__(self, cfg: Mapping, main_type_index: int | None = None):
        self.cfg = merged_config(cfg)
        self.main_type_index = main_type_index

    @property
    def two_views(self) -> bool:
        return self.cfg["rdrop"]["enabled"] or self.cfg["simcse"]["enabled"]

    def span_loss(self, scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over (sample, type); with ``weight`` (B,), each sample's terms scaled by it
        (pseudo-labelled titles count less than gold ones), still divided by B x T."""
        eps = float(self.cfg["label_smoothing"])
        reduction = "mean" if weight is None else "none"
        if eps > 0:
            loss = soft_label_gp_loss(scores, labels, valid, eps, reduction)
        else:
            loss = multilabel_gp_loss(scores, labels, valid, reduction)
        return loss if weight is None else (loss * weight[:, None]).mean()

    def mixed_loss(self, scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                   mixer: Mixer | None, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The span loss; for a mixed batch lambda * L(y) + (1 - lambda) * L(y_perm)."""
        if mixer is None:
            return self.span_loss(scores, labels, valid, weight)
        partner = weight[mixer.perm] if weight is not None else None  # its labels' weight
        return mixer.lam * self.span_loss(scores, labels, valid, weight) + (
            1.0 - mixer.lam) * self.span_loss(scores, labels[mixer.perm], valid, partner)

    def soft_loss(self, scores: torch.Tensor, targets: torch.Tensor, has: torch.Tensor,
                  valid: torch.Tensor, mixer: Mixer | None) -> torch.Tensor:
        """The soft-label CE against teacher probabilities, over the rows that have them
        (``has`` 1), divided by B x T like the gold loss. For one cell alone its minimum is at
        s = logit(p) / 2: the student keeps the teachers' decisions (s > 0 where p > 0.5)
        with half their log-odds."""
        def term(p: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            loss = soft_label_gp_loss(scores, p, valid, 0.0, reduction="none")
            return (loss * rows[:, None]).mean()

        if mixer is None:
            return term(targets, has)
        return mixer.lam * term(targets, has) + (1.0 - mixer.lam) * term(targets[mixer.perm],
                                                                       has[mixer.perm])

    def sample_mixer(self, batch_size: int, views: int, device) -> Mixer | None:
        """A mixer for this batch with probability ``mixup.probability``, else None.

        With two views (R-Drop/SimCSE) both copies of a row get the same partner, so the
        views still show the same (mixed) input.
        """
        mix = self.cfg["mixup"]
        if not mix["enabled"] or batch_size < 2 or torch.rand(()) >= float(mix["probability"]):
            return None
        alpha = float(mix["alpha"])
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(batch_size)
        perm = torch.cat([perm + v * batch_size for v in range(views)])
        return Mixer(lam, perm.to(device), mix["layer"])

    def head_loss(self, model: NerModel, h: torch.Tensor, labels: torch.Tensor,
                  valid: torch.Tensor, mixer: Mixer | None, weight: torch.Tensor | None = None,
                  soft: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Scores of the (first) dropout sample, and the gold and soft-target losses
        averaged over all samples (the soft one None without soft targets)."""
        msd = self.cfg["multisample_dropout"]
        samples = int(msd["samples"]) if msd["enabled"] else 1
        p = float(msd["p"]) if msd["enabled"] else 0.0
        first, total, distilled = None, 0.0, None
        for _ in range(samples):
            scores = model.head(F.dropout(h, p, training=True) if p > 0 else h)
            total = total + self.mixed_loss(scores, labels, valid, mixer, weight)
            if soft is not None:
                term = self.soft_loss(scores, *soft, valid, mixer)
                distilled = term if distilled is None else distilled + term
            first = scores if first is None else first
        return first, total / samples, None if distilled is None else distilled / samples

    def __call__(self, model: NerModel, batch: dict[str, torch.Tensor]):
        size = batch["input_ids"].shape[0]
        if self.two_views:
            batch = duplicate(batch)
        mixer = self.sample_mixer(size, 2 if self.two_views else 1, batch["input_ids"].device)
        char_mask = batch["char_mask"] if mixer is None else mixer.union(batch["char_mask"])
        valid = valid_cells(char_mask)
        h = model.features(batch, mixer)
        weight = batch.get("weight")
        if weight is not None and bool((weight == 1).all()):
            weight = None  # all gold: the plain mean, bit for bit
        soft = (batch["soft_targets"], batch["has_soft_targets"]) if "soft_targets" in batch \
            else None
        scores, main, distilled = self.head_loss(model, h, batch["labels"], valid, mixer, weight,
                                                 soft)
        tasks, weights = {"main": main}, {"main": 1.0}
        if distilled is not None:  # a task like the auxiliary ones (log-scaled under logsum)
            tasks["distill"], weights["distill"] = distilled, float(self.cfg["distill"]["weight"])
        for name, labels in self.aux_labels(batch["labels"]).items():
            tasks[name] = self.mixed_loss(model.aux_heads[name](h), labels, valid, mixer, weight)
            weights[name] = float(self.cfg[name]["weight"])
        parts = {f"loss_{name}": loss.detach() for name, loss in tasks.items()}
        if self.cfg["mixup"]["enabled"]:  # the share of titles in mixed batches, per epoch
            parts["mixed"] = torch.tensor(float(mixer is not None))
        total = combine_tasks(tasks, weights, self.cfg["weighting"], float(self.cfg["logsum_eps"]))
        if self.cfg["rdrop"]["enabled"]:
            s, t = scores[:size], scores[size:]
            reg = rdrop_loss(s, t, valid[:size], float(self.cfg["rdrop"]["alpha"]))
            parts["loss_rdrop"] = reg.detach()
            total = total + reg
        if self.cfg["simcse"]["enabled"]:
            sim = self.cfg["simcse"]
            z = pool(h, char_mask, sim["pooling"])
            reg = float(sim["weight"]) * simcse_loss(z[:size], z[size:], float(sim["temperature"]))
            parts["loss_simcse"] = reg.detach()
            total = total + reg
        return total, parts

    def aux_labels(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Targets of the auxiliary 1-type heads: any entity, and the main type."""
        out = {}
        if self.cfg["boundary"]["enabled"]:
            out["boundary"] = labels.any(dim=1, keepdim=True)
        if self.cfg["main_entity"]["enabled"]:
            k = self.main_type_index
            out["main_entity"] = labels[:, k : k + 1]
        return out


def build_objective(cfg: Mapping, model: NerModel) -> Objective:
    """The objective for ``model``; auxiliary heads must exist on the model when enabled."""
    objective = Objective(cfg)
    for name in ("boundary", "main_entity"):
        if objective.cfg[name]["enabled"] and name not in model.aux_heads:
            raise ValueError(f"objective.{name} is on but the model has no {name} head")
    if objective.cfg["main_entity"]["enabled"]:
        objective.main_type_index = model.labels.index(model.spec.aux_heads["main_entity"])
    return objective
