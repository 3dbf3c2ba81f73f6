"""Shared fixtures: tiny synthetic data, a tiny model, and a throw-away project copy."""

from __future__ import annotations

import os

# Tiny models gain nothing from threads, and oversubscribed cores slow them tenfold;
# subprocesses (kedro runs) inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil
from pathlib import Path

import pytest
import torch

from jd_ner.demo import generate
from jd_ner.text.bio import format_submission, spans_to_tags

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# A model small enough to train a few steps in about a second.
TINY_MODEL = {
    "encoder": {"kind": "bert", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                "intermediate_size": 64, "dropout": 0.1, "max_positions": 64,
                "bigram_dim": 16, "lstm_hidden": 16, "lstm_layers": 1},
    "head": {"kind": "gp", "head_size": 8, "rope": True},
}


DECODE = {"overlap": "greedy_score", "whitespace": "trim"}


def base_parameters() -> dict:
    """The project's parameters as `kedro run` would load them from conf/base."""
    from kedro.config import OmegaConfigLoader

    return OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="base")[
        "parameters"]


def tiny_config(trick: str = "baseline") -> dict:
    """Resolved training settings of ``trick`` over the tiny model (as --params would do)."""
    from jd_ner.config import deep_merge, resolve_trick

    # word sets need the features' word vocabulary, and a pretrained start the pretrain
    # step's encoder, which unit tests do not build; the `words` and `pretrained` presets
    # switch them back on (and `ensemble` the default's 3 members)
    tiny = {"model": {**TINY_MODEL, "encoder": {**TINY_MODEL["encoder"], "init": "scratch"},
                      "words": {"enabled": False}},
            "ensemble": {"members": 1}}  # one model (the default's 3 triple the time)
    return resolve_trick(trick, deep_merge(base_parameters()["train"], tiny))


def tiny_features() -> dict:
    """Feature settings with a window small enough that test titles need several."""
    return {**base_parameters()["features"], "max_chars": 30, "window_stride": 20}


@pytest.fixture(scope="session")
def tiny_titles():
    return generate(60, seed=7)


def write_bio(path: Path, titles) -> Path:
    path.write_text(format_submission([t for t, _ in titles],
                                      [spans_to_tags(len(t), s) for t, s in titles]),
                    encoding="utf-8")
    return path


def _end_mlflow_runs() -> None:
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture()
def project(tmp_path, tiny_titles):
    """A copy of the project's configuration with tiny raw inputs, to run Kedro in.

    kedro-mlflow re-opens its run before every node and closes it once, so an in-process
    session leaves MLflow runs open; they are closed here so sessions stay independent.
    """
    _end_mlflow_runs()
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copy(ROOT / ".telemetry", root / ".telemetry")
    shutil.copytree(ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    # MLflow caches its store per tracking URI for the life of the process, so the relative
    # sqlite:///mlflow.db would keep writing to the first project's file: an absolute one
    mlflow_yml = root / "conf" / "base" / "mlflow.yml"
    mlflow_yml.write_text(mlflow_yml.read_text().replace(
        "mlflow_tracking_uri: sqlite:///mlflow.db", f"mlflow_tracking_uri: sqlite:///{root}/mlflow.db"))
    (root / "src").mkdir()  # the package itself is installed in the environment
    raw = root / "data" / "01_raw"
    raw.mkdir(parents=True)
    write_bio(raw / "synthetic_train.txt", tiny_titles[:50])
    long_title = "".join(t for t, _ in tiny_titles[50:60])  # longer than a tiny window
    (raw / "synthetic_test.txt").write_text(
        "\n".join([t for t, _ in tiny_titles[50:58]] + [long_title]) + "\n", encoding="utf-8")
    yield root
    _end_mlflow_runs()
