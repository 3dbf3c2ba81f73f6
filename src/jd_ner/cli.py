"""Project CLI: Kedro's own ``run`` command, with ``--params`` accepting ``key:value`` and a
request checked before anything runs.

Kedro 1.x reads ``--params`` only as ``key=value``; the commands in this project's
documentation use ``--params=trick:mixup``. Each comma-separated item is split at
whichever of ``:`` and ``=`` comes first, so ``trick:mixup``, ``trick=mixup`` and
``train_file=C:/data/train.txt`` all work. ``--pipeline`` is taken as ``--pipelines``.

An unknown pipeline, trick or setting stops the command with the known names and a "did
you mean" before any node runs (and before an MLflow run is opened). Everything else is
Kedro's ``run``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from pathlib import Path

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.cli.utils import _split_params, split_string


def normalise_params(items: list[str]) -> str:
    """``["trick:mixup", "a=b:c"] -> "trick=mixup,a=b:c"``."""
    out = []
    for item in items:
        colon, equals = item.find(":"), item.find("=")
        if colon != -1 and (equals == -1 or colon < equals):
            item = f"{item[:colon]}={item[colon + 1:]}"
        out.append(item)
    return ",".join(out)


def split_params(ctx: click.Context, param: click.Parameter, value):
    if isinstance(value, dict):
        return value
    return _split_params(ctx, param, normalise_params(split_string(ctx, param, value)))


def _dotted(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}} -> {"a": {...}, "a.b": 1}``: every key path, inner ones included."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out[path] = value
        if isinstance(value, dict):
            out.update(_dotted(value, f"{path}."))
    return out


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def check_request(parameters: dict, runtime_keys: set[str], pipelines: list[str],
                  asked_pipelines: list[str], params: dict) -> None:
    """``click.ClickException`` for the first unknown pipeline, setting or trick asked for.

    ``parameters`` are the project's (conf), ``runtime_keys`` the ``runtime_params`` the
    catalog reads (file paths), ``params`` the nested ``--params`` of the command.
    """
    for name in asked_pipelines:
        if name not in pipelines:
            raise click.ClickException(
                f"unknown pipeline {name!r}{_suggest(name, pipelines)} Known pipelines: "
                f"{', '.join(p for p in pipelines if p != '__default__')}.")
    known = _dotted(parameters)
    for key, value in _dotted(params).items():
        inner = isinstance(value, dict) and key in known and isinstance(known[key], dict)
        if key in known or key in runtime_keys or inner:
            continue
        parent = key.rpartition(".")[0]
        if parent and parent not in known:
            continue  # reported at its parent, the first unknown part
        siblings = [k for k in known if k.rpartition(".")[0] == parent] + (
            sorted(runtime_keys) if not parent else [])
        if parent.startswith("train.presets") or parent.endswith(".presets"):
            continue  # a preset of one's own: any settings
        raise click.ClickException(
            f"unknown setting {key!r}{_suggest(key, siblings)} Settings under "
            f"{parent or 'the top level'}: {', '.join(s.rpartition('.')[2] for s in siblings)}.")
    trick = _dotted(params).get("trick", parameters.get("trick", "baseline"))
    presets = (parameters.get("train") or {}).get("presets") or {}
    for name in str(trick).split("+"):
        if name.strip() not in presets:
            raise click.ClickException(
                f"unknown trick {name.strip()!r}{_suggest(name.strip(), presets)} Known tricks: "
                f"{', '.join(sorted(presets))} (combine with '+').")


def _project_state(env: str | None) -> tuple[dict, set[str], list[str]]:
    """The project's parameters, the runtime keys its catalog reads, its pipeline names."""
    from kedro.framework.project import pipelines, settings
    from kedro.framework.startup import bootstrap_project
    from kedro.utils import find_kedro_project

    root = find_kedro_project(Path.cwd()) or Path.cwd()
    bootstrap_project(root)
    conf = root / settings.CONF_SOURCE
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(conf), env=env,
                                          **settings.CONFIG_LOADER_ARGS)
    runtime = {m for path in conf.rglob("*.yml")
               for m in re.findall(r"runtime_params:(\w+)", path.read_text(encoding="utf-8"))}
    return dict(loader["parameters"]), runtime, list(pipelines.keys())


def _checked(callback):
    @functools.wraps(callback)
    def run(*args, **kwargs):
        if kwargs.get("pipeline") and not kwargs.get("pipelines"):  # Kedro's older spelling
            kwargs["pipelines"], kwargs["pipeline"] = [kwargs["pipeline"]], None
        parameters, runtime, pipelines = _project_state(kwargs.get("env"))
        check_request(parameters, runtime, pipelines, list(kwargs.get("pipelines") or []),
                      kwargs.get("params") or {})
        return callback(*args, **kwargs)

    return run


def _with_colon_params(command: click.Command) -> click.Command:
    command = copy.copy(command)
    command.params = [copy.copy(p) for p in command.params]
    for p in command.params:
        if p.name == "params":
            p.callback = split_params
            p.help = (p.help or "") + " ``key:value`` is accepted as well as ``key=value``."
    command.callback = _checked(command.callback)
    return command


@click.group(name="jd_ner")
def cli() -> None:
    """Project commands."""


run = _with_colon_params(kedro_run)
cli.add_command(run, "run")
