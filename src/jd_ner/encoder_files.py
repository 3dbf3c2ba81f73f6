"""A pretrained character encoder's folder: ``encoder.safetensors`` + ``config.json``.

No Kedro import: ``scripts/compare_tricks.py`` reads these folders on machines that have
only the modelling stack. Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

WEIGHTS, CONFIG = "encoder.safetensors", "config.json"


def save_pretrained_encoder(encoder, directory: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in encoder.state.items()}, str(directory / WEIGHTS))
    (directory / CONFIG).write_text(json.dumps(encoder.config(), ensure_ascii=False, indent=1),
                                    encoding="utf-8")


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
