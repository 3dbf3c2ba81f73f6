"""Data-parallel training on several processes: GPUs of one or more machines, or CPU
processes with the gloo backend. PyTorch's own engine does the work: ``torchrun`` starts the
processes and their rendezvous, DistributedDataParallel averages gradients.

One machine (`kedro run --params=train.distributed.nproc_per_node=4`): the ``train_model``
node writes what training needs (model, windows, settings, objective, dev evaluator) to a
temporary folder and starts ``torchrun --standalone --nproc-per-node 4 -m jd_ner.distributed
DIR``; rank 0 reads it and broadcasts it to the others, trains, evaluates dev, checkpoints and
logs to the node's MLflow run, and writes the selected weights back; the node saves the
model through the catalog as always. The other ranks write nothing.

Several machines: the Kedro machine (node 0) runs with ``train.distributed.nnodes=N`` and
``master_addr`` set to an address the others reach; each other machine runs

    torchrun --nnodes N --node-rank R --nproc-per-node K --master-addr ADDR \
        --master-port PORT -m jd_ner.distributed

with the project installed (no data or configuration needed: rank 0 sends everything).

``train.optim.batch_size`` stays the global batch: each optimizer step consumes the same
titles as a one-process run, split over the processes, and the learning rate means what it
meant there (scale both yourself to use more GPUs for larger batches).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PAYLOAD, RESULT = "payload.pt", "result.pt"


@dataclass
class DistributedSettings:
    """``train.distributed``: how many processes train together."""

    nproc_per_node: int = 1  # processes on this machine (one per GPU); 1 and nnodes 1: off
    nnodes: int = 1  # machines; the others join with torchrun (module docstring)
    master_addr: str = "127.0.0.1"  # this machine, as the others reach it (nnodes > 1)
    master_port: int = 29500  # (nnodes > 1; one machine picks a free port itself)
    backend: str = "auto"  # auto: nccl when training on CUDA, gloo on CPU
    timeout_minutes: int = 30  # how long a rank waits for the others before failing

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ValueError("train.distributed.nproc_per_node and nnodes must be at least 1")
        if self.backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"train.distributed.backend must be auto, nccl or gloo, "
                             f"not {self.backend!r}")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def torchrun_args(self, node_rank: int = 0) -> list[str]:
        if self.nnodes == 1:
            return ["--standalone", f"--nproc-per-node={self.nproc_per_node}"]
        return [f"--nnodes={self.nnodes}", f"--node-rank={node_rank}",
                f"--nproc-per-node={self.nproc_per_node}", f"--master-addr={self.master_addr}",
                f"--master-port={self.master_port}"]


def train_distributed(model, train, cfg, objective, evaluate, checkpoints,
                      settings: DistributedSettings, tracking: dict | None = None,
                      keep_gradients: bool = False, adversarial=None, averaging=None):
    """Run :func:`jd_ner.modeling.training.fit` on ``settings.world_size`` processes;
    ``model`` ends with rank 0's selected weights, and rank 0's ``FitResult`` is returned.

    ``evaluate`` and ``objective`` must pickle (they travel to rank 0); ``tracking``
    (:func:`jd_ner.tracking.active_run_reference`) lets rank 0 log epochs to the caller's
    MLflow run. ``keep_gradients`` also returns the last step's averaged gradients (``fit``
    leaves them on the parameters), to check the arithmetic.
    """
    with tempfile.TemporaryDirectory(prefix="jd_ner-ddp-") as tmp:
        from jd_ner.modeling.device import resolve_device

        backend = settings.backend if settings.backend != "auto" else (
            "nccl" if resolve_device(cfg.device).type == "cuda" else "gloo")
        torch.save({"model": model, "train": list(train), "cfg": cfg, "objective": objective,
                    "evaluate": evaluate, "checkpoints": checkpoints, "tracking": tracking,
                    "keep_gradients": keep_gradients, "backend": settings.backend,
                    "adversarial": adversarial, "averaging": averaging},
                   Path(tmp) / PAYLOAD)
        command = [sys.executable, "-m", "torch.distributed.run", *settings.torchrun_args(),
                   "-m", "jd_ner.distributed", "--payload", tmp, f"--backend={backend}",
                   f"--timeout-minutes={settings.timeout_minutes}"]
        logger.info("training on %d processes: %s", settings.world_size, " ".join(command))
        done = subprocess.run(command, check=False)
        if not (Path(tmp) / RESULT).is_file():
            raise RuntimeError(f"distributed training failed (torchrun exit status "
                               f"{done.returncode}); the processes' errors are printed above")
        if done.returncode != 0:
            # rank 0 writes its result (atomically) after the last gradient all-reduce, which
            # every rank took part in: a failure after that is a process failing to shut
            # down (seen with gloo: "terminate called without an active exception")
            logger.warning("torchrun exited with status %d after rank 0 had written the "
                           "trained model: a process failed while shutting down; the model is "
                           "kept", done.returncode)
        out = torch.load(Path(tmp) / RESULT, map_location="cpu", weights_only=False)
    model.load_state_dict(out["state"])
    if keep_gradients:
        for name, param in model.named_parameters():
            param.grad = out["gradients"].get(name)
    return out["result"]


def _backend(name: str) -> str:
    if name != "auto":
        return name
    return "nccl" if torch.cuda.is_available() else "gloo"


def worker(payload_dir: str | None, backend: str, timeout_minutes: int = 30) -> None:
    """One torchrun process: join the group, receive the work from rank 0, train."""
    import torch.distributed as dist

    from jd_ner.modeling.training import fit
    from jd_ner.tracking import run_logger

    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if rank == 0 and payload_dir is None:
        raise SystemExit("rank 0 runs on the Kedro machine (node rank 0), started by the "
                         "train_model node; start the other machines with their --node-rank")
    backend = _backend(backend)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    try:
        box = [torch.load(Path(payload_dir) / PAYLOAD, map_location="cpu", weights_only=False)
               if rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        work = box[0]
        main = rank == 0
        if main:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
        model, cfg = work["model"], work["cfg"]
        if torch.cuda.is_available() and cfg.device != "cpu":  # one GPU per local rank
            torch.cuda.set_device(local_rank)
            cfg = replace(cfg, device=f"cuda:{local_rank}")
        result = fit(model, work["train"], cfg, work["objective"],
                     work["evaluate"] if main else None,
                     on_epoch_end=run_logger(work["tracking"]) if main else None,
                     checkpoints=work["checkpoints"] if main else None,
                     adversarial=work["adversarial"], averaging=work["averaging"])
        if main:
            gradients = {n: p.grad.detach().cpu() for n, p in model.named_parameters()
                         if p.grad is not None} if work["keep_gradients"] else {}
            tmp = Path(payload_dir) / (RESULT + ".tmp")
            torch.save({"state": model.state_dict(), "result": result, "gradients": gradients},
                       tmp)
            tmp.rename(Path(payload_dir) / RESULT)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a jd_ner training process under torchrun")
    parser.add_argument("--payload", help="the exchange folder (rank 0, set by train_model)")
    parser.add_argument("--backend", default="auto", choices=["auto", "nccl", "gloo"],
                        help="as node 0's (auto: nccl when CUDA is available)")
    parser.add_argument("--timeout-minutes", type=int, default=30)
    args = parser.parse_args(argv)
    worker(args.payload, args.backend, args.timeout_minutes)


if __name__ == "__main__":
    main()
