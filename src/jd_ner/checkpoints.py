"""Resumable training state, one folder per run (what the ``training_checkpoints`` dataset
hands the training node). No Kedro import: the nodes also run without Kedro, e.g. in
``scripts/compare_tricks.py``."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class RunCheckpoint:
    """The resumable state of one training run: ``<root>/<run key>/last.pt``.

    Written atomically (a temporary file, then renamed), read with
    ``torch.load(weights_only=True)``: tensors and plain values only, never pickled code.
    """

    def __init__(self, folder: Path, every: int, resume: str):
        if resume not in ("auto", "never", "required"):
            raise ValueError(f"train.optim.resume must be auto, never or required, not {resume!r}")
        self.folder, self.every, self.resume = Path(folder), int(every), resume
        self.path = self.folder / "last.pt"

    def load(self) -> dict | None:
        import torch

        if self.resume == "never" or not self.path.is_file():
            if self.resume == "required":
                raise FileNotFoundError(f"train.optim.resume=required but there is no checkpoint "
                                        f"for this run configuration at {self.path}")
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, state: dict) -> None:
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".last.", suffix=".pt", dir=self.folder)
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class CheckpointStore:
    """A folder of per-run checkpoints; a run is identified by a key of its settings and data."""

    def __init__(self, root: str):
        self.root = Path(root)

    def for_run(self, key: str, every: int, resume: str) -> RunCheckpoint:
        return RunCheckpoint(self.root / key, every, resume)
