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


def test_compare_tricks_pretrains_each_distinct_encoder_once_and_reuses_it(tmp_path):
    from jd_ner.encoder_files import SavedEncoder, texts_digest
    from jd_ner.pipelines.ingest.nodes import parse_labelled_titles, split_titles
    from jd_ner.text.bio import RawFile

    data = write_bio(tmp_path / "train.txt", generate(120, seed=3))
    more = tmp_path / "unlabelled.txt"
    more.write_text("\n".join(t for t, _ in generate(30, seed=9)) + "\n", encoding="utf-8")
    tiny = ["train.optim.epochs=1", "train.model.head.head_size=4", "train.ensemble.members=1",
            "pretrain.optim.epochs=1", "decode.threshold=0",
            *(f"train.model.encoder.{key}={value}" for key, value in ENCODER.items())]
    encoders, out = tmp_path / "encoders", tmp_path / "runs.json"

    def compare(tricks: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts/compare_tricks.py"), "--train-file", str(data),
             "--tricks", tricks, "--seeds", "3", "--jobs", "2", "--threads", "1",
             "--pretrain", str(encoders), "--unlabelled", str(more), "--json", str(out),
             *(f"--set={item}" for item in tiny)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    # rdrop changes the objective, not the encoder: it shares the baseline's pretraining
    done = compare("baseline,baseline[train.model.encoder.lstm_hidden=6],rdrop,scratch")
    runs = {r["trick"]: r for r in json.loads(out.read_text())["runs"]}
    assert "char_encoder" not in runs["scratch"]
    base, wide, rdrop = (runs[t]["char_encoder"] for t in (
        "baseline", "baseline[train.model.encoder.lstm_hidden=6]", "rdrop"))
    assert base == rdrop and base["key"] != wide["key"] and not base["reused"]
    assert sorted(p.name for p in encoders.iterdir()) == sorted([base["key"], wide["key"]])
    assert done.stdout.count("pretrained encoder") == 2
    params = base_parameters()
    titles, _ = parse_labelled_titles(RawFile(str(data), data.read_bytes()), params["ingest"])
    train, dev, test = split_titles(titles, params["ingest"])
    for made, lstm in ((base, ENCODER["lstm_hidden"]), (wide, 6)):
        info = SavedEncoder(encoders / made["key"]).info
        assert info["run_inputs"]["encoder"]["lstm_hidden"] == lstm
        assert info["train_split"] == texts_digest(train["text"])
        assert made["epochs"] == 1
    # the unlabelled titles and the train split, never the split's dev or test titles
    assert base["titles"] == len({*train["text"], *(t for t, _ in generate(30, seed=9))}
                                 - {*dev["text"], *test["text"]})
    again = compare("baseline")
    assert "reused encoder" in again.stdout and "pretrained encoder" not in again.stdout
    reused = json.loads(out.read_text())["runs"][0]["char_encoder"]
    assert reused == {**base, "reused": True}
