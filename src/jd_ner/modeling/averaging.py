"""Weight averaging: an exponential moving average of the weights (EMA), or the mean of the
last k epochs' weights (SWA, Izmailov et al. 2018).

EMA: after every optimizer step s ← d·s + (1−d)·w, starting from the initial weights; dev
is scored with s, and the selected (saved) model is s at the best epoch.
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
    ema_decay: float = 0.999
    swa_epochs: int = 3

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"train.averaging.method must be one of {METHODS}, "
                             f"not {self.method!r}")
        if not 0.0 <= self.ema_decay < 1.0 or self.swa_epochs < 1:
            raise ValueError("train.averaging: ema_decay in [0, 1), swa_epochs >= 1")


def _floats(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained weights: frozen ones (e.g. LAC's) and buffers stay as they are, not even
    rounded by averaging equal values."""
    return {k: v for k, v in model.named_parameters() if v.requires_grad}


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in _floats(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, value in _floats(model).items():
            self.shadow[name].mul_(self.decay).add_(value.detach(), alpha=1.0 - self.decay)

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
        return {"shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
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


def build_averager(cfg: AveragingConfig, model: nn.Module) -> EMA | SWA | None:
    if cfg.method == "ema":
        return EMA(model, cfg.ema_decay)
    if cfg.method == "swa":
        return SWA(cfg.swa_epochs)
    return None
