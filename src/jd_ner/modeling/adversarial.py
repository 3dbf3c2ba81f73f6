"""Adversarial training: FGM and PGD on the input embeddings, AWP on the weights.

Each step, after the clean loss's backward pass, the attack moves the embeddings (or
weights) in the direction that raises the loss, the loss is computed again there, its
gradient added, and the parameters are put back exactly. The step's gradient is the
**mean** of the clean and the adversarial gradients (both losses are halved, as FreeLB
averages its steps), so an attack of size 0 is plain training.

- FGM (Miyato et al. 2017): r = ε · g / ‖g‖₂ per embedding table.
- PGD (Madry et al. 2018): K steps r ← Π_{‖r‖≤ε}(r + α · g / ‖g‖₂); only the last step's
  adversarial gradient is kept with the clean one.
- AWP (Wu et al. 2020): each chosen weight w moves by η · ‖w‖ · g / ‖g‖, clipped elementwise
  to [w − ε|w|, w + ε|w|], from a start epoch on.

"Embeddings" are the model's input embedding tables (characters, bigrams and the word,
lexicon, pinyin and glyph features when present): every ``nn.Embedding`` that trains,
except position and token-type embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

METHODS = ("none", "fgm", "pgd", "awp")


@dataclass
class AdversarialConfig:
    """``train.adversarial``: which attack, and its knobs."""

    method: str = "none"
    epsilon: float = 1.0  # fgm / pgd: L2 radius per embedding table
    alpha: float = 0.3  # pgd: step size
    steps: int = 3  # pgd: K
    awp_lr: float = 1.0  # awp: step relative to each weight's norm
    awp_epsilon: float = 1e-3  # awp: bound relative to each weight's magnitude
    awp_params: str = "weight"  # awp: parameters whose name contains this
    awp_start_epoch: int = 2  # awp: first epoch it attacks

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"train.adversarial.method must be one of {METHODS}, "
                             f"not {self.method!r}")
        if self.steps < 1 or self.epsilon < 0 or self.alpha < 0:
            raise ValueError("train.adversarial: steps must be >= 1, epsilon and alpha >= 0")


def embedding_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The input embedding tables an embedding attack perturbs."""
    found = {}
    for name, module in model.named_modules():
        if (isinstance(module, nn.Embedding) and module.weight.requires_grad
                and "position" not in name and "token_type" not in name):
            found[f"{name}.weight"] = module.weight
    if not found:
        raise ValueError("the model has no trainable input embeddings to attack")
    return found


def _unit(grad: torch.Tensor) -> torch.Tensor | None:
    norm = torch.linalg.vector_norm(grad.float())
    if norm == 0 or not torch.isfinite(norm):
        return None
    return grad / norm


class Adversary:
    """Runs one training step's backward passes with the configured attack."""

    def __init__(self, cfg: AdversarialConfig, model: nn.Module):
        self.cfg = cfg
        if cfg.method in ("fgm", "pgd"):
            self.targets = embedding_parameters(model)
        elif cfg.method == "awp":
            self.targets = {n: p for n, p in model.named_parameters()
                            if p.requires_grad and cfg.awp_params in n}
            if not self.targets:
                raise ValueError(f"train.adversarial.awp_params {cfg.awp_params!r} names no "
                                 "trainable parameter")
        else:
            self.targets = {}
        self._backup: dict[str, torch.Tensor] = {}

    def active(self, epoch: int) -> bool:
        return self.cfg.method != "none" and not (
            self.cfg.method == "awp" and epoch < self.cfg.awp_start_epoch)

    def backward(self, loss: torch.Tensor, forward: Callable[[], torch.Tensor],
                 scale: Callable[[torch.Tensor], torch.Tensor], epoch: int,
                 model: nn.Module) -> float | None:
        """The step's backward passes; returns the (last) adversarial loss, or None when
        no attack ran (``scale`` is the loss scaler's ``scale``)."""
        if not self.active(epoch):
            scale(loss).backward()
            return None
        scale(loss * 0.5).backward()
        self._backup = {n: p.detach().clone() for n, p in self.targets.items()}
        try:
            if self.cfg.method == "pgd":
                adv = self._pgd(forward, scale, model)
            else:
                self._fgm() if self.cfg.method == "fgm" else self._awp()
                adv = forward()
                scale(adv * 0.5).backward()
        finally:
            self.restore()
        return float(adv.detach())

    @torch.no_grad()
    def _fgm(self) -> None:
        for param in self.targets.values():
            direction = _unit(param.grad) if param.grad is not None else None
            if direction is not None:
                param.add_(self.cfg.epsilon * direction)

    @torch.no_grad()
    def _awp(self) -> None:
        for name, param in self.targets.items():
            direction = _unit(param.grad) if param.grad is not None else None
            if direction is None:
                continue
            original = self._backup[name]
            step = self.cfg.awp_lr * torch.linalg.vector_norm(original) * direction
            bound = self.cfg.awp_epsilon * original.abs()
            param.copy_(torch.clamp(original + step, original - bound, original + bound))

    def _pgd(self, forward, scale, model: nn.Module) -> torch.Tensor:
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
                 if p.grad is not None}
        for k in range(self.cfg.steps):
            with torch.no_grad():
                for name, param in self.targets.items():
                    direction = _unit(param.grad) if param.grad is not None else None
                    if direction is not None:
                        param.add_(self.cfg.alpha * direction)
                    delta = param - self._backup[name]
                    norm = torch.linalg.vector_norm(delta)
                    if norm > self.cfg.epsilon:  # back onto the ball
                        param.copy_(self._backup[name] + delta * (self.cfg.epsilon / norm))
            last = k == self.cfg.steps - 1
            for name, param in model.named_parameters():
                # intermediate steps only steer the attack; the last one adds its gradient
                # to the clean one
                param.grad = grads[name].clone() if last and name in grads else None
            adv = forward()
            scale(adv * (0.5 if last else 1.0)).backward()
        return adv

    @torch.no_grad()
    def restore(self) -> None:
        for name, param in self.targets.items():
            if name in self._backup:
                param.copy_(self._backup[name])
        self._backup = {}
