"""scripts/compare_tricks.py end to end: the runs it trains and the table it writes."""

from __future__ import annotations

import json
import subprocess
import sys

from jd_ner.checkpoints import CheckpointStore
from jd_ner.demo import generate
from tests.conftest import ROOT, base_parameters, write_bio

ENCODER = {"hidden_size": 16, "num_layers": 0, "bigram_dim": 8, "lstm_hidden": 8}


def pretrained_encoder_for_the_split(data, tmp_path):
    """A one-epoch pretrained encoder made, as the pretrain pipeline makes it, for the train
    split that compare_tricks cuts from ``data``."""
    from kedro.io import Version

    from jd_ner.datasets import PretrainedEncoderDataset
    from jd_ner.pipelines.ingest.nodes import parse_labelled_titles, split_titles
    from jd_ner.pipelines.pretrain.nodes import pretrain_char_encoder
    from jd_ner.text.bio import RawFile

    params = base_parameters()
    titles, _ = parse_labelled_titles(RawFile(str(data), data.read_bytes()), params["ingest"])
    train, _, _ = split_titles(titles, params["ingest"])
    settings = {**params["pretrain"], "optim": {**params["pretrain"]["optim"], "epochs": 1,
                                                "progress": False, "resume": "never"}}
    encoder_config = {"model": {"encoder": {**params["train"]["model"]["encoder"], **ENCODER}}}
    encoder, _ = pretrain_char_encoder(train, train, encoder_config, settings, params["features"],
                                       CheckpointStore(str(tmp_path / "checkpoints")))
    PretrainedEncoderDataset(str(tmp_path / "char_encoder"), Version(None, None)).save(encoder)
    return next((tmp_path / "char_encoder").glob("*/char_encoder")), len(train)


def test_compare_tricks_scores_an_ensemble_and_each_member_on_a_share_of_the_train_split(tmp_path):
    data = write_bio(tmp_path / "train.txt", generate(120, seed=3))
    # the default starts from a pretrained encoder made for the whole train split: a share of
    # it must still be trained as that split's model, or training refuses the encoder
    encoder, train_titles = pretrained_encoder_for_the_split(data, tmp_path)
    tiny = ["train.optim.epochs=1", "train.model.head.head_size=4", "train.ensemble.members=2",
            *(f"train.model.encoder.{key}={value}" for key, value in ENCODER.items())]
    out = tmp_path / "runs.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts/compare_tricks.py"), "--train-file",
                           str(data), "--tricks", "baseline", "--seeds", "3", "--threads", "1",
                           "--train-fraction", "0.5", "--char-encoder", str(encoder),
                           "--json", str(out), *(f"--set={item}" for item in tiny)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert [(r["trick"], r["seed"]) for r in saved["runs"]] == [
        ("baseline", 3), ("baseline/members", 3), ("baseline/members", 1003),
        ("baseline/threshold 0", 3)]
    whole, first, _, at_zero = saved["runs"]
    assert all(len(r["test_counts"]) == whole["test_titles"] == 12 for r in saved["runs"])
    assert first["best_epoch"] == whole["best_epoch"] == 1
    assert train_titles == 96 and whole["train_titles"] == 48  # half of the train split
    assert at_zero["threshold"] == 0.0 and whole["threshold"] in [-3 + 0.25 * i for i in range(17)]
    assert whole["dev_f1"] >= at_zero["dev_f1"]  # 0 was a candidate: dev chose no worse
    assert [row["trick"] for row in saved["table"]] == [
        "baseline", "baseline/members", "baseline/threshold 0"]


def compare_tricks_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_tricks", ROOT / "scripts/compare_tricks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slots_go_by_rank_and_none_after_a_failure():
    import threading
    import time

    import pytest

    slots = compare_tricks_module().Slots(1)
    order = []

    def take(rank):
        with slots.taken(rank):
            order.append(rank)

    with slots.taken(-1):  # held while the others queue up, in another order than their ranks
        threads = [threading.Thread(target=take, args=(rank,)) for rank in (3, 2, 0, 1)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while len(slots.waiting) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3]
    slots.fail("run x failed")
    slots.fail("stopped")  # the first failure is the one reported
    with pytest.raises(SystemExit, match="run x failed"), slots.taken(7):
        pass


def test_compare_tricks_pretrains_each_distinct_encoder_once_and_reuses_it(tmp_path):
    import shutil

    from jd_ner.encoder_files import WEIGHTS, SavedEncoder, texts_digest
    from jd_ner.pipelines.ingest.nodes import parse_labelled_titles, split_titles
    from jd_ner.text.bio import RawFile

    data = write_bio(tmp_path / "train.txt", generate(120, seed=3))
    params = base_parameters()
    titles, _ = parse_labelled_titles(RawFile(str(data), data.read_bytes()), params["ingest"])
    train, dev, test = split_titles(titles, params["ingest"])
    # unlabelled titles, among them dev and test titles of the split: never pretrained on
    unlabelled = [t for t, _ in generate(30, seed=9)]
    more = tmp_path / "unlabelled.txt"
    more.write_text("\n".join([*unlabelled, *dev["text"][:2], test["text"].iloc[0]]) + "\n",
                    encoding="utf-8")
    tiny = ["train.optim.epochs=1", "train.model.head.head_size=4", "train.ensemble.members=1",
            "pretrain.optim.epochs=1", "decode.threshold=0",
            *(f"train.model.encoder.{key}={value}" for key, value in ENCODER.items())]
    encoders, out = tmp_path / "encoders", tmp_path / "runs.json"

    def compare(tricks: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts/compare_tricks.py"), "--train-file", str(data),
             "--tricks", tricks, "--seeds", "3", "--jobs", "2", "--threads", "1",
             "--pretrain", str(encoders), "--unlabelled", str(more), "--json", str(out),
             *(f"--set={item}" for item in tiny)], capture_output=True, text=True, timeout=300)
        assert (done.returncode == 0) == ok, done.stderr[-3000:]
        return done

    # rdrop changes the objective, not the encoder: it shares the baseline's pretraining;
    # a pretraining setting, like an encoder setting, makes another encoder
    wide, masked = "baseline[train.model.encoder.lstm_hidden=6]", "baseline[pretrain.mask_probability=0.3]"
    done = compare(f"baseline,{wide},{masked},rdrop,scratch")
    runs = {r["trick"]: r for r in json.loads(out.read_text())["runs"]}
    assert "char_encoder" not in runs["scratch"]
    made = {t: runs[t]["char_encoder"] for t in ("baseline", wide, masked, "rdrop")}
    assert made["baseline"] == made["rdrop"] and not made["baseline"]["reused"]
    keys = {made[t]["key"] for t in ("baseline", wide, masked)}
    assert len(keys) == 3 and sorted(p.name for p in encoders.iterdir()) == sorted(keys)
    assert done.stdout.count("pretrained encoder") == 3
    for trick, lstm, mask in (("baseline", ENCODER["lstm_hidden"], 0.15), (wide, 6, 0.15),
                              (masked, ENCODER["lstm_hidden"], 0.3)):
        info = SavedEncoder(encoders / made[trick]["key"]).info
        assert info["run_inputs"]["encoder"]["lstm_hidden"] == lstm
        assert info["mask_probability"] == mask
        assert info["train_split"] == texts_digest(train["text"])
        assert made[trick]["epochs"] == 1
    # the unlabelled titles and the whole train split, never the split's dev or test titles
    assert made["baseline"]["titles"] == len({*train["text"], *unlabelled}
                                             - {*dev["text"], *test["text"]})
    again = compare("baseline")
    assert "reused encoder" in again.stdout and "pretrained encoder" not in again.stdout
    assert json.loads(out.read_text())["runs"][0]["char_encoder"] == {**made["baseline"],
                                                                      "reused": True}
    # a folder that holds other weights than its key's is refused, not reused
    shutil.copy(encoders / made[wide]["key"] / WEIGHTS, encoders / made["baseline"]["key"] / WEIGHTS)
    refused = compare("baseline", ok=False)
    assert "its weights are not the ones pretrained: move it away" in refused.stderr


def test_compare_tricks_pretrain_needs_unlabelled_titles_and_no_char_encoder(tmp_path):
    script = [sys.executable, str(ROOT / "scripts/compare_tricks.py"), "--train-file", "t.txt",
              "--pretrain", str(tmp_path)]
    for extra, message in ((["--unlabelled", "u.txt", "--char-encoder", "e"], "drop --char-encoder"),
                           ([], "name them")):
        done = subprocess.run([*script, *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr


class Interrupted(Exception):
    """Stands for the process being killed once its first checkpoint is on disk."""


def test_compare_tricks_resumes_an_interrupted_pretraining(tmp_path):
    import argparse
    import importlib.util

    from jd_ner.checkpoints import RunCheckpoint
    from jd_ner.encoder_files import SavedEncoder
    from jd_ner.pipelines.pretrain.nodes import pretrain_char_encoder

    spec = importlib.util.spec_from_file_location("compare_tricks", ROOT / "scripts/compare_tricks.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    data = write_bio(tmp_path / "train.txt", generate(80, seed=3))
    more = tmp_path / "unlabelled.txt"
    more.write_text("\n".join(t for t, _ in generate(40, seed=9)) + "\n", encoding="utf-8")
    settings = ["pretrain.optim.epochs=2", "pretrain.optim.batch_size=16",
                *(f"train.model.encoder.{key}={value}" for key, value in ENCODER.items())]
    args = argparse.Namespace(conf=ROOT / "conf", params=settings, device=None, train_file=data,
                              unlabelled=[more])
    params, config, _ = compare.resolved(args, "single")
    train, dev, test = compare.whole_split(args, params)
    key = compare.encoder_keys(args, ["single"])["single"]

    class KilledAfterFirstSave(RunCheckpoint):
        def save(self, state: dict) -> None:
            super().save(state)
            raise Interrupted

    class Store(CheckpointStore):
        def for_run(self, key: str, every: int, resume: str) -> RunCheckpoint:
            return KilledAfterFirstSave(self.root / key, 1, resume)

    # the first pretraining dies after its first step, its checkpoint under DIR
    encoders = tmp_path / "encoders"
    try:
        pretrain_char_encoder(compare.pretraining_corpus(args, train, dev, test), train, config,
                              {**params["pretrain"], "optim": {**params["pretrain"]["optim"],
                                                               "progress": False}},
                              params["features"], Store(str(encoders / compare.PRETRAINING_CHECKPOINTS)))
    except Interrupted:
        pass
    assert (encoders / compare.PRETRAINING_CHECKPOINTS / f"pretrain-{key}" / "last.pt").is_file()

    def pretrain(folder):
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts/compare_tricks.py"), "--train-file", str(data),
             "--pretrain-for", "single", "--encoder-out", str(folder / key), "--threads", "1",
             "--unlabelled", str(more), *(f"--set={item}" for item in settings)],
            capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    resumed, fresh = pretrain(encoders), pretrain(tmp_path / "fresh")
    assert resumed["resumed_from"] == "epoch 1, batch 1" and fresh["resumed_from"] is None
    # the resumed pretraining ends where an uninterrupted one does, and leaves no checkpoint
    assert (SavedEncoder(encoders / key).info["weights_sha256"]
            == SavedEncoder(tmp_path / "fresh" / key).info["weights_sha256"])
    assert sorted(p.name for p in encoders.iterdir()) == [key]
