"""Interrupted training resumes to the same weights; the same seed gives the same model."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from .conftest import DECODE, TINY_MODEL, tiny_config, tiny_features

LOCAL = {"train": {"model": TINY_MODEL, "optim": {
    "epochs": 12, "batch_size": 8, "progress": False, "checkpoint_every": 2, "threads": 1},
    "ensemble": {"members": 1}},  # an ensemble's resume: tests/test_ensemble.py
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


def train_once(tiny_titles, tmp_path, name, trick="baseline", config=None, final_fit=False,
               decode=DECODE):
    """Features and training through the node functions, as the pipeline calls them."""
    from jd_ner.checkpoints import CheckpointStore
    from jd_ner.encoding import spans_cell, titles_frame
    from jd_ner.pipelines.features import nodes as features
    from jd_ner.pipelines.train.nodes import build_model, train_model

    frame = titles_frame([{"title_id": i, "text": t, "spans": spans_cell(s), "line": i + 1}
                          for i, (t, s) in enumerate(tiny_titles)])
    train, dev = frame.iloc[:50].reset_index(drop=True), frame.iloc[50:].reset_index(drop=True)
    if final_fit:
        train, dev = frame, frame.iloc[:0]
    params = tiny_features()
    cv = features.build_char_vocabulary(train, None, params)
    bv = features.build_bigram_vocabulary(train, params)
    pv = features.build_pinyin_vocabulary(train)
    gv = features.build_glyph_vocabulary(train, params)
    lexicon = features.build_entity_lexicon(train, params)
    folds = features.build_entity_lexicon_folds(train, params)
    schema = features.build_label_schema(train, dev, dev.iloc[:0])
    if config is None:
        config = tiny_config(trick)
        config["optim"].update(epochs=2, batch_size=8, progress=False, resume="never")
    inputs = {s: features.build_model_input(features.encode_split(f, cv, bv, schema, params),
                                            pv, gv, params)
              for s, f in (("train", train), ("dev", dev))}
    model = build_model(config, cv, bv, pv, gv, lexicon, schema, params, None)
    model, history = train_model(model, inputs["train"], inputs["dev"], folds, dev, config,
                                 decode, CheckpointStore(str(tmp_path / name)))
    return model, history


def test_same_seed_and_config_give_bit_identical_weights_and_metrics(tiny_titles, tmp_path):
    model_a, history_a = train_once(tiny_titles, tmp_path, "a")
    model_b, history_b = train_once(tiny_titles, tmp_path, "b")
    weights_a, weights_b = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    timing = [c for c in history_a.columns if "seconds" in c or "per_s" in c]
    assert history_a.drop(columns=timing).equals(history_b.drop(columns=timing))
