"""Kedro datasets of this project: raw contest files, saved models, the checkpoint folder.

A model is a folder with ``model.safetensors`` (weights) and ``config.json`` (its
:class:`~jd_ner.modeling.model.ModelSpec`: hyper-parameters, labels, vocabularies).
Loading needs nothing else and never unpickles anything.
"""

from __future__ import annotations

import json
import os
import re
from functools import wraps
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, AbstractVersionedDataset, DatasetError, Version

from jd_ner.checkpoints import CheckpointStore
from jd_ner.encoder_files import CONFIG as ENCODER_CONFIG
from jd_ner.encoder_files import (
    NothingToSave,
    SavedEncoder,
    save_pretrained_encoder,
    write_folder_atomically,
)
from jd_ner.text.bio import RawFile

WEIGHTS, CONFIG = "model.safetensors", "config.json"


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
            shown = self._filepath if path.is_absolute() else f"{self._filepath} ({path.resolve()})"
            raise DatasetError(f"raw input file not found: {shown}.{hint}")
        return RawFile(self._filepath, path.read_bytes())

    def save(self, data: Any) -> None:
        raise DatasetError(f"{self._filepath} is a raw input: the pipeline never writes it")

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath}


class RawFilesDataset(AbstractDataset[None, list]):
    """Several read-only raw files, given as one string of paths separated by ``;`` (so a
    run can name them with ``--params=unlabelled_files="a.txt;b.txt"``)."""

    def __init__(self, filepaths: str, how_to_get: str = "", metadata: dict | None = None):
        self._paths = [p.strip() for p in str(filepaths).split(";") if p.strip()]
        self._how_to_get = how_to_get
        self.metadata = metadata

    def load(self) -> list[RawFile]:
        return [RawFileDataset(path, self._how_to_get).load() for path in self._paths]

    def save(self, data: Any) -> None:
        raise DatasetError(f"{self._paths} are raw inputs: the pipeline never writes them")

    def _exists(self) -> bool:
        return all(Path(p).is_file() for p in self._paths)

    def _describe(self) -> dict[str, Any]:
        return {"filepaths": self._paths}


class _VersionedPath(AbstractVersionedDataset[Any, Any]):
    """A versioned file or folder; ``_marker`` names the file whose presence means saved."""

    _marker = ""

    def __init__(self, filepath: str, version: Version | None = None,
                 metadata: dict | None = None):
        super().__init__(PurePosixPath(filepath), version)
        self.metadata = metadata

    def _newest(self) -> Path | None:
        """The version to load, or None while nothing was saved (an explicitly requested
        version that is missing still fails)."""
        try:
            path = Path(self._get_load_path())
        except DatasetError:
            if self._version is not None and self._version.load:
                raise
            return None
        return path if path.exists() else None

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path(), self._marker).exists()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}


class PretrainedEncoderDataset(_VersionedPath):
    """A versioned pretrained character encoder folder (``jd_ner.encoder_files``).

    Loads as a :class:`~jd_ner.encoder_files.SavedEncoder` (read when a model starts from
    it), or ``None`` while nothing has been pretrained: a model that does not start from it
    (``train.model.encoder.init: scratch``) needs none, and one that does says so.
    """

    _marker = ENCODER_CONFIG

    def load(self):
        directory = self._newest()
        return SavedEncoder(directory) if directory is not None else None

    def save(self, encoder) -> None:
        save_pretrained_encoder(encoder, self._get_save_path())

    @classmethod
    def _save_wrapper(cls, save_func):
        versioned = super()._save_wrapper(save_func)

        @wraps(save_func)
        def save(self, data) -> None:
            # a run from scratch pretrained nothing: no version is made, and Kedro's check
            # that the version just saved is the newest does not apply
            if not isinstance(data, NothingToSave):
                versioned(self, data)

        return save


class SavedEncodersDataset(AbstractDataset[None, list]):
    """Every saved version of the pretrained encoder, newest first (read-only): a
    pretraining step reuses one made from the same titles and settings."""

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> list[SavedEncoder]:
        if not self._path.is_dir():
            return []
        folders = sorted((v / self._path.name for v in self._path.iterdir()), reverse=True)
        return [SavedEncoder(f) for f in folders if (f / ENCODER_CONFIG).is_file()]

    def save(self, data: Any) -> None:
        raise DatasetError("the saved encoders are listed here, and written as char_encoder")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class OptionalTitlesDataset(_VersionedPath):
    """A versioned title table (parquet) that loads as an empty table while none was saved:
    pseudo-labelled titles exist only once the pseudo_label pipeline has run."""

    def load(self):
        import pandas as pd

        from jd_ner.encoding import titles_frame

        path = self._newest()
        return pd.read_parquet(path) if path is not None else titles_frame([])

    def save(self, data) -> None:
        path = Path(self._get_save_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        data.to_parquet(path, index=False)


ENSEMBLE_FORMAT = "jd_ner.ensemble/1"


def _write_model(model, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": model.spec.to_dict()["format"]})
    (folder / CONFIG).write_text(json.dumps(model.spec.to_dict(), ensure_ascii=False, indent=1),
                                 encoding="utf-8")


def save_model(model, directory: str | os.PathLike) -> None:
    """Write weights and spec atomically: into a temporary folder, then renamed. An
    ensemble is a ``config.json`` naming its members, each a model folder inside."""
    from jd_ner.modeling.ensemble import EnsembleModel

    def write(tmp: Path) -> None:
        if not isinstance(model, EnsembleModel):
            _write_model(model, tmp)
            return
        names = [f"member_{i}" for i in range(1, len(model.members) + 1)]
        for name, member in zip(names, model.members, strict=True):
            _write_model(member, tmp / name)
        (tmp / CONFIG).write_text(json.dumps({"format": ENSEMBLE_FORMAT, "members": names,
                                              "threshold": model.spec.threshold,
                                              "training": model.spec.training},
                                             ensure_ascii=False, indent=1), encoding="utf-8")

    write_folder_atomically(directory, write)


def load_model(directory: str | os.PathLike):
    """Rebuild a model (or an ensemble of them) from its folder; no pickle, no external
    configuration."""
    from safetensors.torch import load_file

    from jd_ner.modeling.ensemble import EnsembleModel
    from jd_ner.modeling.model import ModelSpec, NerModel

    directory = Path(directory)
    if not (directory / CONFIG).is_file():
        raise DatasetError(f"{directory} is not a saved jd_ner model: {CONFIG} is missing")
    try:
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    except ValueError as err:
        raise DatasetError(f"{directory / CONFIG}: not JSON ({err})") from None
    if isinstance(config, dict) and config.get("format") == ENSEMBLE_FORMAT:
        members = [load_model(directory / name) for name in config["members"]]
        try:
            return EnsembleModel(members, config.get("training"),
                                 float(config.get("threshold", 0.0))).eval()
        except ValueError as err:
            raise DatasetError(f"{directory}: {err}") from None
    if not (directory / WEIGHTS).is_file():
        raise DatasetError(f"{directory} is not a saved jd_ner model: {WEIGHTS} is missing")
    try:
        spec = ModelSpec.from_dict(config)
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


class NerModelDataset(_VersionedPath):
    """A versioned model folder (safetensors + JSON)."""

    _marker = CONFIG

    def load(self):
        path = Path(self._get_load_path())
        model = load_model(path)
        model.version = path.parent.name  # which run made it: shown in reports and MLflow
        return model

    def save(self, model) -> None:
        save_model(model, self._get_save_path())


class NerModelsDataset(_VersionedPath):
    """A versioned folder of named models (the distill pipeline's teachers): one model
    folder per name, loaded back as a name -> model dict in name order."""

    _marker = "models.json"

    def load(self) -> dict:
        path = Path(self._get_load_path())
        names = json.loads((path / self._marker).read_text(encoding="utf-8"))["models"]
        models = {}
        for name in names:
            models[name] = load_model(path / name)
            models[name].version = path.parent.name
        return models

    def save(self, models: dict) -> None:
        if not models:
            raise DatasetError("no models to save")
        bad = [name for name in models if not re.fullmatch(r"[\w.-]+", name)]
        if bad:
            raise DatasetError(f"model names must be file names, got {bad}")
        path = Path(self._get_save_path())
        for name, model in models.items():
            save_model(model, path / name)
        (path / self._marker).write_text(json.dumps({"models": list(models)}), encoding="utf-8")


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
