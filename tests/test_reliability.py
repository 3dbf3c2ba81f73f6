"""Interrupted training resumes to the same weights; the same seed gives the same model."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from .conftest import TINY_MODEL

LOCAL = {"train": {"model": TINY_MODEL, "optim": {
    "epochs": 12, "batch_size": 8, "progress": False, "checkpoint_every": 2, "threads": 1}},
    "features": {"max_chars": 30, "window_stride": 20}}


def kedro_cmd():
    return [str(Path(sys.executable).with_name("kedro")), "run", "--pipeline=train"]


def env():
    return {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}


def final_weights(project: Path) -> dict:
    versions = sorted((project / "data/06_models/ner_model").iterdir())
    return load_file(str(versions[-1] / "ner_model" / "model.safetensors"))


def test_training_killed_with_sigkill_resumes_to_identical_weights(project, tmp_path):
    (project / "conf/local/parameters.yml").write_text(yaml.safe_dump(LOCAL))
    reference = tmp_path / "reference"
    shutil.copytree(project, reference, symlinks=True)
    checkpoints = project / "data/06_models/checkpoints"

    proc = subprocess.Popen(kedro_cmd(), cwd=project, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list(checkpoints.glob("*/last.pt")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be interrupted"
    time.sleep(0.3)  # let it run on past the first checkpoint
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert list(checkpoints.glob("*/last.pt"))
    assert not (project / "data/06_models/ner_model").exists()

    resumed = subprocess.run(kedro_cmd(), cwd=project, env=env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming from a checkpoint" in resumed.stdout + resumed.stderr
    assert not list(checkpoints.glob("*/last.pt")), "a finished run removes its checkpoint"

    straight = subprocess.run(kedro_cmd(), cwd=reference, env=env(), capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    a, b = final_weights(project), final_weights(reference)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def train_once(tiny_titles, tmp_path, name):
    import pandas as pd

    from jd_ner.datasets import CheckpointStore
    from jd_ner.encoding import spans_cell, titles_frame
    from jd_ner.pipelines.features.nodes import (
        build_bigram_vocabulary,
        build_char_vocabulary,
        build_label_schema,
        encode_split,
    )
    from jd_ner.pipelines.train.nodes import resolve_training_config, train_model

    frame = titles_frame([{"title_id": i, "text": t, "spans": spans_cell(s), "line": i + 1}
                          for i, (t, s) in enumerate(tiny_titles)])
    train, dev = frame.iloc[:50].reset_index(drop=True), frame.iloc[50:].reset_index(drop=True)
    features = {"char_min_count": 1, "bigram_min_count": 1, "max_chars": 30, "window_stride": 20}
    cv, bv = build_char_vocabulary(train, None, features), build_bigram_vocabulary(train, features)
    schema = build_label_schema(train, dev)
    config = resolve_training_config("baseline", yaml.safe_load(
        (Path(__file__).parents[1] / "conf/base/parameters_train.yml").read_text())["train"])
    config["model"] = TINY_MODEL
    config["optim"].update(epochs=2, batch_size=8, progress=False, resume="never")
    model, history = train_model(
        encode_split(train, cv, bv, schema, features), encode_split(dev, cv, bv, schema, features),
        dev, cv, bv, schema, config, features, {"overlap": "greedy_score"}, None,
        CheckpointStore(str(tmp_path / name)))
    assert isinstance(history, pd.DataFrame)
    return model.state_dict(), history


def test_same_seed_and_config_give_bit_identical_weights_and_metrics(tiny_titles, tmp_path):
    weights_a, history_a = train_once(tiny_titles, tmp_path, "a")
    weights_b, history_b = train_once(tiny_titles, tmp_path, "b")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    timing = [c for c in history_a.columns if "seconds" in c or "per_s" in c]
    assert history_a.drop(columns=timing).equals(history_b.drop(columns=timing))
