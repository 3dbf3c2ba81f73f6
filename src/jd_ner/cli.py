"""Project CLI: Kedro's own ``run`` command, with ``--params`` accepting ``key:value``.

Kedro 1.x reads ``--params`` only as ``key=value``; the commands in this project's
documentation use ``--params=trick:mixup``. Each comma-separated item is split at
whichever of ``:`` and ``=`` comes first, so ``trick:mixup``, ``trick=mixup`` and
``train_file=C:/data/train.txt`` all work. Everything else is Kedro's ``run``.
"""

from __future__ import annotations

import copy

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


def _with_colon_params(command: click.Command) -> click.Command:
    command = copy.copy(command)
    command.params = [copy.copy(p) for p in command.params]
    for p in command.params:
        if p.name == "params":
            p.callback = split_params
            p.help = (p.help or "") + " ``key:value`` is accepted as well as ``key=value``."
    return command


@click.group(name="jd_ner")
def cli() -> None:
    """Project commands."""


run = _with_colon_params(kedro_run)
cli.add_command(run, "run")
