"""A pretrained character encoder's folder: ``encoder.safetensors`` + ``config.json``.

No Kedro import: ``scripts/compare_tricks.py`` reads these folders on machines that have
only the modelling stack. Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

WEIGHTS, CONFIG = "encoder.safetensors", "config.json"


def texts_digest(texts: Iterable[str]) -> str:
    """A digest of a set of titles (order and repeats ignored): which split a pretrained
    encoder or a set of pseudo-labels was made for."""
    digest = hashlib.sha256()
    for text in sorted(set(texts)):
        digest.update(text.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def write_folder_atomically(directory: str | os.PathLike, write) -> None:
    """``write(tmp)`` fills a temporary sibling folder, which then replaces ``directory``:
    a reader never sees a half-written model or encoder."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_pretrained_encoder(encoder, directory: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in encoder.state.items()}, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(encoder.config(), ensure_ascii=False, indent=1),
                                  encoding="utf-8")

    write_folder_atomically(directory, write)


def load_pretrained_encoder(directory: str | os.PathLike):
    """The :class:`~jd_ner.modeling.pretraining.PretrainedEncoder` saved in ``directory``;
    ``ValueError`` naming the folder when it is not one."""
    from safetensors.torch import load_file

    from jd_ner.modeling.pretraining import PretrainedEncoder

    directory = Path(directory)
    for name in (WEIGHTS, CONFIG):
        if not (directory / name).is_file():
            raise ValueError(f"{directory} is not a saved pretrained encoder: {name} is missing")
    try:
        return PretrainedEncoder.from_config(
            json.loads((directory / CONFIG).read_text(encoding="utf-8")),
            load_file(str(directory / WEIGHTS)))
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{directory}: {err}") from None


class SavedEncoder:
    """A pretrained encoder folder, read only when a model starts from it: a run that
    trains from scratch neither pays for reading it nor fails on a broken one."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    @property
    def info(self) -> dict:
        """What it was pretrained on and how (config.json only, no weights)."""
        return json.loads((self.directory / CONFIG).read_text(encoding="utf-8")).get("info", {})

    def load(self):
        return load_pretrained_encoder(self.directory)

    def __repr__(self) -> str:
        return f"SavedEncoder({str(self.directory)!r})"


class NothingToSave:
    """What a pretraining step gives when no new encoder version is needed: a run that
    trains from scratch, or one that reuses the newest saved encoder as it is."""

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"NothingToSave({self.reason!r})"


NOT_PRETRAINED = NothingToSave("no pretrained encoder needed")
NEWEST_REUSED = NothingToSave("the newest saved encoder is reused")
