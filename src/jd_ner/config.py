"""Resolving ``trick`` presets into one training configuration.

``train`` parameters hold the base settings (``model``, ``optim``, ``objective``) and a
``presets`` table; ``trick: a+b`` deep-merges preset ``a`` then ``b`` over the base.
The result is the single source of truth of a run: it is saved and logged.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

SECTIONS = ("model", "optim", "objective")


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """A copy of ``base`` with ``override`` merged in, recursively for mappings."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def trick_names(trick: str) -> list[str]:
    names = [part.strip() for part in str(trick).split("+")]
    if not trick or any(not n for n in names):
        raise ValueError(f"trick {trick!r} is not a '+'-separated list of preset names")
    return names


def _check_keys(preset: str, override: Mapping, base: Mapping, where: str = "") -> None:
    for key, value in override.items():
        if key not in base:
            raise ValueError(f"preset {preset!r} sets unknown setting {where}{key!r}; "
                             f"known here: {sorted(base)}")
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            _check_keys(preset, value, base[key], f"{where}{key}.")


def resolve_trick(trick: str, train: Mapping[str, Any]) -> dict:
    """Base training settings with the named presets applied in order.

    Unknown preset names fail with the list of known ones; a preset that sets a key the
    base does not have fails too, so a typo in YAML cannot silently do nothing.
    """
    presets = train.get("presets", {})
    base = {k: v for k, v in train.items() if k != "presets"}
    missing = [s for s in SECTIONS if s not in base]
    if missing:
        raise ValueError(f"train parameters lack sections {missing}")
    names = trick_names(trick)
    unknown = [n for n in names if n not in presets]
    if unknown:
        raise ValueError(f"unknown trick {', '.join(map(repr, unknown))}; "
                         f"known tricks: {', '.join(sorted(presets))}")
    resolved = base
    for name in names:
        override = presets[name] or {}
        _check_keys(name, override, base)
        resolved = deep_merge(resolved, override)
    resolved["trick"] = "+".join(names)
    return resolved


def flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``, for logging."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def threshold_setting(decode: Mapping) -> float | None:
    """``decode.threshold``: a fixed decision threshold, or None when training chooses it on
    dev (``dev``)."""
    value = decode.get("threshold", 0.0)
    if value == "dev":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"decode.threshold must be `dev` or a number, not {value!r}")
    return float(value)


def threshold_candidates(decode: Mapping) -> list[float]:
    """The thresholds ``dev`` chooses among: ``decode.threshold_candidates`` [from, to, step]."""
    setting = decode.get("threshold_candidates")
    try:
        low, high, step = (float(v) for v in setting)
    except (TypeError, ValueError):
        raise ValueError("decode.threshold_candidates must be [from, to, step], not "
                         f"{setting!r}") from None
    if not (step > 0 and low <= high):
        raise ValueError(f"decode.threshold_candidates [{low}, {high}, {step}]: need from <= to "
                         "and a positive step")
    return [round(low + i * step, 9) for i in range(int(round((high - low) / step)) + 1)]
