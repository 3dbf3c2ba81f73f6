"""Weight averaging: an exponential moving average of the weights (EMA), or the mean of the
last k epochs' weights (SWA, Izmailov et al. 2018).

EMA: after the t-th optimizer step, s_t = Σ_{i≤t} d^(t−i)·(1−d)·w_i / (1 − d^t): the
exponentially weighted mean of the weights the steps reached, the initial weights not among
them (the division is Adam's bias correction; updated as s ← s + (w − s)·(1−d)/(1 − d^t), so
s_1 = w_1). The decay follows from a horizon in epochs, d = 1 − 1/(ema_epochs · steps an
epoch): the mean then spans about the last ema_epochs epochs on a large file and a small
one alike (a per-step decay of 0.999 spans 4 epochs of the contest file's 245 steps, but
more than the demo's whole run of 8-step epochs, whose EMA stayed near the initial weights).
Dev is scored with s, and the selected (saved) model is s at the best epoch.
SWA: the weights at the end of each of the last k epochs run are averaged; the saved model
is that mean, scored on dev once more. The models here have no BatchNorm (LayerNorm keeps no
running statistics), so the mean needs no statistics recomputed; with BatchNorm layers it
would (``torch.optim.swa_utils.update_bn``).
Only trained parameters are averaged; frozen ones and buffers keep the model's.
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

METHODS = ("none", "ema", "swa")


@dataclass
class AveragingConfig:
    """``train.averaging``."""

    method: str = "none"
    ema_epochs: float = 4.0
    swa_epochs: int = 3

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"train.averaging.method must be one of {METHODS}, "
                             f"not {self.method!r}")
        if not self.ema_epochs > 0 or self.swa_epochs < 1:
            raise ValueError("train.averaging: ema_epochs > 0, swa_epochs >= 1")

    def ema_decay(self, steps_per_epoch: int) -> float:
        return max(0.0, 1.0 - 1.0 / (self.ema_epochs * max(1, steps_per_epoch)))


def _floats(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained weights: frozen ones (e.g. LAC's) and buffers stay as they are, not even
    rounded by averaging equal values."""
    return {k: v for k, v in model.named_parameters() if v.requires_grad}


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.steps = decay, 0
        self.shadow = {k: v.detach().clone() for k, v in _floats(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        rate = (1.0 - self.decay) / (1.0 - self.decay ** self.steps)
        for name, value in _floats(model).items():
            self.shadow[name].lerp_(value.detach(), rate)

    @contextmanager
    def applied(self, model: nn.Module):
        """The model holds the averaged weights inside the block, its own after."""
        own = {k: v.detach().clone() for k, v in _floats(model).items()}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(own, strict=False)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        for name, value in state["shadow"].items():  # onto the device the shadow lives on
            self.shadow[name].copy_(value)


class SWA:
    def __init__(self, epochs: int):
        self.snapshots: deque[dict[str, torch.Tensor]] = deque(maxlen=epochs)
        self.epochs: deque[int] = deque(maxlen=epochs)

    def add(self, model: nn.Module, epoch: int) -> None:
        self.snapshots.append({k: v.detach().cpu().clone() for k, v in _floats(model).items()})
        self.epochs.append(epoch)

    def average(self) -> dict[str, torch.Tensor]:
        names = self.snapshots[0].keys()
        return {k: torch.stack([s[k] for s in self.snapshots]).mean(dim=0) for k in names}

    def state_dict(self) -> dict:
        return {"snapshots": list(self.snapshots), "epochs": list(self.epochs)}

    def load_state_dict(self, state: dict) -> None:
        self.snapshots.clear()
        self.epochs.clear()
        for snapshot, epoch in zip(state["snapshots"], state["epochs"], strict=True):
            self.snapshots.append(snapshot)
            self.epochs.append(epoch)


def build_averager(cfg: AveragingConfig, model: nn.Module,
                   steps_per_epoch: int) -> EMA | SWA | None:
    if cfg.method == "ema":
        return EMA(model, cfg.ema_decay(steps_per_epoch))
    if cfg.method == "swa":
        return SWA(cfg.swa_epochs)
    return None
