"""The training loop: AdamW, linear warm-up and decay, clipping, AMP on CUDA, best epoch kept."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from jd_ner.modeling.adversarial import AdversarialConfig, Adversary
from jd_ner.modeling.averaging import EMA, SWA, AveragingConfig, build_averager
from jd_ner.modeling.batching import Example, length_bucketed_batches, move
from jd_ner.modeling.device import autocast_dtype, resolve_device
from jd_ner.modeling.model import NerModel
from jd_ner.modeling.predict import collator_for

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings; every field is a ``train.optim`` parameter."""

    epochs: int | str = "auto"  # a number: exactly that many (fewer if patience stops it)
    auto_steps: int = 3400  # epochs=auto: about this many optimizer steps ...
    max_epochs: int = 60  # ... but at most this many epochs
    patience: int = 5  # stop after this many epochs without a better dev score (0: never)
    batch_size: int = 32
    learning_rate: float = 2e-3
    encoder_learning_rate: float | None = None  # None: same as learning_rate
    lac_learning_rate: float | None = None  # LAC-small's weights (encoder.lac=finetune); None: same
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    eval_batch_size: int = 32
    device: str = "auto"  # auto: cuda when available, else cpu
    amp: bool = True  # mixed precision (see jd_ner.modeling.device.autocast_dtype)
    amp_dtype: str = "auto"  # auto | bfloat16 | float16 (CUDA only; float16 uses loss scaling)
    threads: int = 0  # CPU threads for torch; 0 leaves torch's default
    progress: bool = True
    checkpoint_every: int = 200  # steps between mid-epoch checkpoints (0: epoch ends only)
    resume: str = "auto"  # auto: resume a checkpoint of the same run if any; never; required


# Settings that do not change what is computed: a checkpoint stays valid across them.
NOT_IN_RUN_KEY = ("resume", "checkpoint_every", "progress", "threads", "device",
                  "eval_batch_size")


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    history: list[dict] = field(default_factory=list)
    planned_epochs: int = 0  # the schedule's length
    stopped_early: bool = False  # patience ended the run before planned_epochs
    resumed_from: str | None = None  # "epoch E, batch B" when a checkpoint was resumed
    averaged_epochs: tuple[int, int] | None = None  # SWA: the first and last epoch averaged
    averaged_metrics: dict | None = None  # SWA: the averaged model's dev metrics


class Checkpoints(Protocol):
    """Where ``fit`` keeps its resumable state (see ``jd_ner.datasets.CheckpointDir``)."""

    every: int  # optimizer steps between mid-epoch checkpoints; 0: epoch ends only

    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...

    def clear(self) -> None: ...


def process_group() -> tuple[int, int]:
    """This process's rank and the number of processes training together (0, 1 alone)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard(batch: list[int], rank: int, world: int) -> tuple[list[int], float]:
    """This rank's part of a global batch, and the factor its mean loss is scaled by.

    Every rank draws the same global batches (same seed); rank r takes every world-th title
    from position r. Gradients are then averaged over ranks, so scaling a rank's per-title
    mean loss by ``len(part) * world / len(batch)`` makes the average the gradient of the
    global batch's mean loss even when the parts differ in size. A rank left without a
    title (a last batch smaller than the world) still takes part, with one title and factor 0.
    """
    part = batch[rank::world]
    if not part:
        return batch[:1], 0.0
    return part, len(part) * world / len(batch)


class _ObjectiveStep(torch.nn.Module):
    """The model and its objective as one module, so DistributedDataParallel sees every
    forward computation an objective makes (R-Drop's two passes, auxiliary heads...)."""

    def __init__(self, model: torch.nn.Module, objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch):
        return self.objective(self.model, batch)


def describe_epoch(record: dict, epochs: int) -> str:
    """One short line per epoch: the loss (and its other parts), dev P/R/F1, speed."""
    parts = [f"{k.removeprefix('loss_')} {v:.4f}" for k, v in record.items()
             if k.startswith("loss_") and k != "loss_main"]
    line = f"epoch {record['epoch']}/{epochs}: loss {record.get('train_loss', float('nan')):.4f}"
    line += f" ({', '.join(parts)})" if parts else ""
    if "dev_f1" in record:
        line += (f" · dev F1 {record['dev_f1']:.4f} (P {record.get('dev_precision', 0):.3f},"
                 f" R {record.get('dev_recall', 0):.3f})")
    if "masked_accuracy" in record:
        line += f" · masked accuracy {record['masked_accuracy']:.3f}"
    return line + f" · {record['train_titles_per_s']:.0f} titles/s, {record['train_seconds']:.0f} s"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _param_groups(model: NerModel, cfg: TrainConfig) -> list[dict]:
    groups: dict[tuple[float, float], list] = {}
    enc_lr = cfg.encoder_learning_rate or cfg.learning_rate
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("encoder.transformer."):
            lr = enc_lr
        elif name.startswith("encoder.lac."):
            lr = cfg.learning_rate if cfg.lac_learning_rate is None else cfg.lac_learning_rate
        else:
            lr = cfg.learning_rate
        no_decay = (param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
                    or name.endswith("bias"))  # LAC's biases are stacked per direction: 2-D
        groups.setdefault((lr, 0.0 if no_decay else cfg.weight_decay), []).append(param)
    return [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()]


def linear_schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def planned_epochs(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """How many epochs the schedule spans: ``epochs`` when it is a number, else enough
    epochs for about ``auto_steps`` optimizer steps (at most ``max_epochs``).

    A fixed step budget rather than a fixed epoch count lets a small data set get as many
    updates as a large one (the JD train split: 245 steps per epoch, 14 epochs); patience
    on dev F1 ends runs that have converged earlier.
    """
    if isinstance(cfg.epochs, str):
        if cfg.epochs != "auto":
            raise ValueError(f"train.optim.epochs must be a number or 'auto', got {cfg.epochs!r}")
        if cfg.auto_steps < 1 or cfg.max_epochs < 1:
            raise ValueError("train.optim.auto_steps and max_epochs must be positive")
        return max(1, min(cfg.max_epochs, math.ceil(cfg.auto_steps / steps_per_epoch)))
    if int(cfg.epochs) < 1:
        raise ValueError(f"train.optim.epochs must be at least 1, got {cfg.epochs}")
    return int(cfg.epochs)


def _rng_state(rng: random.Random) -> dict:
    # Only tensors and plain Python values: the checkpoint loads with weights_only=True.
    state = {"python_batches": rng.getstate(), "python": random.getstate(),
             "numpy": [v.tolist() if isinstance(v, np.ndarray) else v
                       for v in np.random.get_state()],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(rng: random.Random, state: dict) -> None:
    def tuples(x):
        return tuple(tuples(v) for v in x) if isinstance(x, list) else x

    rng.setstate(tuples(state["python_batches"]))
    random.setstate(tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class OutOfMemory(RuntimeError):
    """Out of accelerator memory, with the batch that did not fit."""


def _is_oom(err: BaseException) -> bool:
    text = str(err).lower()
    return (isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text
            or "can't allocate memory" in text)


def fit(model: NerModel, train: Sequence[Example], cfg: TrainConfig, objective,
        evaluate: Callable[[NerModel], dict[str, float]] | None,
        on_epoch_end: Callable[[dict], None] | None = None,
        on_step: Callable[[int, float], None] | None = None,
        score_key: str = "dev_f1", checkpoints: Checkpoints | None = None,
        adversarial: AdversarialConfig | None = None,
        averaging: AveragingConfig | None = None) -> FitResult:
    """Train ``model`` in place; at the end it holds the weights of its best epoch.

    ``evaluate(model)`` returns dev metrics after each epoch, ``score_key`` among them
    (``None``: no selection, the last epoch is kept and ``best_score`` stays -inf);
    ``on_epoch_end(record)`` receives the epoch's record (for logging), ``on_step(step,
    loss)`` every optimizer step's loss. With
    ``checkpoints``, the complete state (weights, optimizer, scheduler, loss scaler, RNG
    states, position in the epoch, best epoch so far) is saved every ``checkpoints.every``
    steps and at each epoch end, and a saved state is resumed from: the result is the
    same as an uninterrupted run's (in one process; several processes checkpoint at epoch
    ends, and a resumed rank draws fresh dropout masks).

    ``adversarial`` attacks each step (``jd_ner.modeling.adversarial``); ``averaging`` keeps
    an EMA of the weights (dev scored and the model selected with it) or averages the last
    epochs' weights into the returned model (SWA; ``jd_ner.modeling.averaging``).
    """
    if not train:
        raise ValueError("no training examples")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    rank, world = process_group()
    main = rank == 0
    seed_everything(cfg.seed)
    if world > 1:  # each rank its own dropout masks; batch order stays common (rng below)
        torch.manual_seed(cfg.seed + rank)
    device = resolve_device(cfg.device)
    model.to(device)
    if world > 1:
        # DDP copies rank 0's weights to the others, then averages gradients in backward
        step_module = torch.nn.parallel.DistributedDataParallel(
            _ObjectiveStep(model, objective),
            device_ids=[device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda" else None)  # every trick uses all of its parameters
    else:
        step_module = _ObjectiveStep(model, objective)
    adversary = Adversary(adversarial, model) if adversarial is not None else None
    collate = collator_for(model)
    rng = random.Random(cfg.seed)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    averager = build_averager(averaging, model, steps_per_epoch) if averaging is not None else None
    epochs = planned_epochs(cfg, steps_per_epoch)
    total = steps_per_epoch * epochs
    # The fused kernel updates all parameters in one pass: ~10% of a CPU step here, most of
    # it in the large bigram embedding.
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total, cfg.warmup_ratio))
    amp_dtype = autocast_dtype(device, cfg.amp, cfg.amp_dtype)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    result = FitResult(best_epoch=0, best_score=float("-inf"), planned_epochs=epochs)
    best_state = None
    first_epoch, first_batch, batches, totals = 1, 0, None, {}
    saved = checkpoints.load() if checkpoints is not None and main else None
    if world > 1:  # the others resume from rank 0's checkpoint: no shared disk needed
        shared = [saved]
        torch.distributed.broadcast_object_list(shared, src=0)
        saved = shared[0]
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        _restore_rng(rng, saved["rng"])
        first_epoch, first_batch = saved["epoch"], saved["next_batch"]
        batches, totals = saved["batches"], saved["totals"]
        result.best_score, result.best_epoch = saved["best_score"], saved["best_epoch"]
        result.history = saved["history"]
        best_state = saved["best_state"]
        if averager is not None:
            averager.load_state_dict(saved["averaging"])
        result.resumed_from = f"epoch {first_epoch}, batch {first_batch}"
        if world > 1:  # each rank its own dropout again (rank 0's state was restored)
            torch.manual_seed(cfg.seed + rank + 7919 * first_epoch)
        logger.info("resuming from a checkpoint at %s", result.resumed_from)

    def snapshot(epoch: int, next_batch: int) -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": _rng_state(rng), "epoch": epoch, "next_batch": next_batch,
                "batches": batches, "totals": totals, "best_score": result.best_score,
                "best_epoch": result.best_epoch, "history": result.history,
                "best_state": best_state,
                "averaging": averager.state_dict() if averager is not None else None}

    step = (first_epoch - 1) * steps_per_epoch + first_batch
    for epoch in range(first_epoch, epochs + 1):
        # checked before each epoch, so a run resumed after its last checkpoint stops too
        stop = (evaluate is not None and cfg.patience > 0 and result.best_epoch > 0
                and epoch - 1 - result.best_epoch >= cfg.patience)
        if world > 1:  # rank 0 alone evaluates: its decision holds for every rank
            decision = torch.tensor([int(stop)], device=device)
            torch.distributed.broadcast(decision, src=0)
            stop = bool(decision.item())
        if stop:
            result.stopped_early = True
            logger.info("no better %s for %d epochs: stopping after epoch %d of %d (best: %d)",
                        score_key, cfg.patience, epoch - 1, epochs, result.best_epoch)
            break
        model.train()
        start = time.perf_counter()
        if batches is None:
            batches, totals = length_bucketed_batches(train, cfg.batch_size, rng), {}
        bar = tqdm(range(first_batch, len(batches)), desc=f"epoch {epoch}/{epochs}",
                   unit="batch", disable=not (cfg.progress and main), mininterval=5,
                   initial=first_batch, total=len(batches))
        for b in bar:
            idx, factor = shard(batches[b], rank, world) if world > 1 else (batches[b], 1.0)
            batch = move(collate([train[i] for i in idx]), device)
            try:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss, parts = step_module(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch}, "
                                             f"batch {b}")
                optimizer.zero_grad(set_to_none=True)
                scaled = loss * factor if world > 1 else loss
                if adversary is None:
                    scaler.scale(scaled).backward()
                else:
                    def again(batch=batch, factor=factor):  # the loss at the attacked point
                        with torch.autocast(device.type, dtype=amp_dtype,
                                            enabled=amp_dtype is not None):
                            return step_module(batch)[0] * factor
                    adv = adversary.backward(scaled, again, scaler.scale, epoch, model)
                    if adv is not None:
                        parts = {**parts, "loss_adversarial": adv / factor if factor else 0.0}
            except RuntimeError as err:
                if not _is_oom(err):
                    raise
                raise OutOfMemory(
                    f"out of {device.type} memory on a batch of {len(idx)} titles padded to "
                    f"{batch['input_ids'].shape[1]} tokens (epoch {epoch}, batch {b}). Lower "
                    "train.optim.batch_size (e.g. --params=train.optim.batch_size="
                    f"{max(1, len(idx) // 2)}) or features.max_chars, or use a smaller "
                    "encoder or head_size.") from err
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if isinstance(averager, EMA):
                averager.update(model)
            step += 1
            titles = len(idx) if factor else 0  # an empty part's stand-in title counts 0
            for key, value in {"train_loss": loss.detach(), **parts}.items():
                totals[key] = totals.get(key, 0.0) + float(value) * titles
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if on_step is not None and main:
                on_step(step, loss.item())
            # several processes checkpoint at epoch ends only: mid-epoch, the loss sums and
            # random states are per rank
            if (checkpoints is not None and main and world == 1 and checkpoints.every > 0
                    and step % checkpoints.every == 0 and b + 1 < len(batches)):
                checkpoints.save(snapshot(epoch, b + 1))
        if world > 1:  # the epoch's loss sums over every rank's titles
            names = sorted(totals)
            summed = torch.tensor([totals[k] for k in names], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(summed)
            totals = dict(zip(names, summed.tolist(), strict=True))
        train_seconds = time.perf_counter() - start
        record = {"epoch": epoch, **{k: v / len(train) for k, v in totals.items()},
                  "train_seconds": train_seconds, "train_titles_per_s": len(train) / train_seconds,
                  "lr": scheduler.get_last_lr()[0]}
        if isinstance(averager, SWA):
            averager.add(model, epoch)
        # with an EMA, dev scores (and the selection keeps) the averaged weights
        weights = averager.applied(model) if isinstance(averager, EMA) else nullcontext(model)
        if evaluate is not None and main:
            eval_start = time.perf_counter()
            with weights:
                record.update(evaluate(model))
                record["eval_seconds"] = time.perf_counter() - eval_start
                score = record[score_key]
                if score > result.best_score:
                    result.best_score, result.best_epoch = score, epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:  # nothing to select on: the last epoch is the model
            result.best_epoch = epoch
            if isinstance(averager, EMA):
                with weights:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        result.history.append(record)
        if main:
            logger.info("%s", describe_epoch(record, epochs))
        if on_epoch_end is not None and main:
            on_epoch_end(record)
        batches, first_batch = None, 0
        if checkpoints is not None and main:
            checkpoints.save(snapshot(epoch + 1, 0))
    if isinstance(averager, SWA) and averager.snapshots:
        # the mean of the last epochs is the model, whatever epoch dev preferred
        model.load_state_dict(averager.average(), strict=False)
        first, last = averager.epochs[0], averager.epochs[-1]
        result.averaged_epochs = (first, last)
        best_state = None
        if evaluate is not None and main:
            result.averaged_metrics = evaluate(model)
            result.best_score = result.averaged_metrics[score_key]
            logger.info("SWA of epochs %d-%d: %s %.4f", first, last, score_key, result.best_score)
        result.best_epoch = last
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu")
    if checkpoints is not None and main:
        checkpoints.clear()
    return result
