"""Kedro datasets of this project: raw contest files and saved models.

A model is a folder with ``model.safetensors`` (weights) and ``config.json`` (its
:class:`~jd_ner.modeling.model.ModelSpec`: hyper-parameters, labels, vocabularies).
Loading needs nothing else and never unpickles anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, AbstractVersionedDataset, DatasetError, Version

WEIGHTS, CONFIG = "model.safetensors", "config.json"


class RawFile:
    """A raw input file's bytes and the path they came from (for error messages)."""

    def __init__(self, path: str, data: bytes):
        self.path, self.data = path, data

    def __repr__(self) -> str:
        return f"RawFile({self.path!r}, {len(self.data)} bytes)"


class RawFileDataset(AbstractDataset[None, RawFile]):
    """Read-only raw file, loaded as bytes so that decoding errors can name their line.

    ``how_to_get`` is shown when the file is missing.
    """

    def __init__(self, filepath: str, how_to_get: str = "", metadata: dict | None = None):
        self._filepath = str(filepath)
        self._how_to_get = how_to_get
        self.metadata = metadata

    def load(self) -> RawFile:
        path = Path(self._filepath)
        if not path.is_file():
            hint = f" {self._how_to_get}" if self._how_to_get else ""
            raise DatasetError(
                f"raw input file not found: {self._filepath} (resolved: {path.resolve()}).{hint}"
            )
        return RawFile(self._filepath, path.read_bytes())

    def save(self, data: Any) -> None:
        raise DatasetError(f"{self._filepath} is a raw input: the pipeline never writes it")

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath}


def save_model(model, directory: str | os.PathLike) -> None:
    """Write weights and spec atomically: into a temporary folder, then renamed."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": model.spec.to_dict()["format"]})
        (tmp / CONFIG).write_text(json.dumps(model.spec.to_dict(), ensure_ascii=False, indent=1),
                                  encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_model(directory: str | os.PathLike):
    """Rebuild a model from its folder; no pickle, no external configuration."""
    from safetensors.torch import load_file

    from jd_ner.modeling.model import ModelSpec, NerModel

    directory = Path(directory)
    for name in (WEIGHTS, CONFIG):
        if not (directory / name).is_file():
            raise DatasetError(f"{directory} is not a saved jd_ner model: {name} is missing")
    try:
        spec = ModelSpec.from_dict(json.loads((directory / CONFIG).read_text(encoding="utf-8")))
    except ValueError as err:
        raise DatasetError(f"{directory}: {err}") from None
    model = NerModel(spec)
    state = load_file(str(directory / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DatasetError(
            f"{directory}: weights do not match config.json (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    model.eval()
    return model


class NerModelDataset(AbstractVersionedDataset[Any, Any]):
    """A versioned model folder (safetensors + JSON)."""

    def __init__(self, filepath: str, version: Version | None = None,
                 metadata: dict | None = None):
        super().__init__(PurePosixPath(filepath), version)
        self.metadata = metadata

    def load(self):
        return load_model(self._get_load_path())

    def save(self, model) -> None:
        save_model(model, self._get_save_path())

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path(), CONFIG).is_file()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}


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


class CheckpointStoreDataset(AbstractDataset[None, CheckpointStore]):
    """Hands the training node its checkpoint folder (the path stays in the catalog)."""

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = str(path)
        self.metadata = metadata

    def load(self) -> CheckpointStore:
        return CheckpointStore(self._path)

    def save(self, data: Any) -> None:
        raise DatasetError("checkpoints are written by the training loop, not saved as output")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}


def saved_path(dataset: AbstractDataset) -> Path | None:
    """Where a file-backed dataset last saved (its versioned path when versioned)."""
    filepath = getattr(dataset, "_filepath", None)
    if filepath is None:
        return None
    if isinstance(dataset, AbstractVersionedDataset) and getattr(dataset, "_version", None):
        version = dataset.resolve_save_version()
        return Path(str(dataset._get_versioned_path(version)))
    return Path(str(filepath))
