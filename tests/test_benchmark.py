"""The benchmark script runs end to end (tiny sizes) and prints its figures."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "01_raw"


def test_benchmark_prints_figures_for_plain_and_feature_tricks(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"),
           "--train-file", str(RAW / "synthetic_train.txt"),
           "--predict-file", str(RAW / "synthetic_test.txt"),
           "--tricks", "baseline,gpkg+pinyin_glyph", "--train-titles", "16",
           "--predict-titles", "24", "--threads", "1", "--features", "--feature-titles", "50",
           "--set", "model.encoder.hidden_size=32", "--set", "model.encoder.bigram_dim=16",
           "--set", "model.encoder.lstm_hidden=16", "--set", "model.encoder.init=scratch",
           "--json", str(out), "--profile",
           "--refs", "HEAD"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("baseline") for line in lines)
    assert any(line.startswith("gpkg+pinyin_glyph") for line in lines)
    assert "feature extraction of 50 titles" in done.stdout
    results = json.loads(out.read_text())
    base, rich = results[0], results[1]
    assert base["train_titles"] == 16 and base["predict_titles"] == 24
    assert base["members"] == 3 and "3 members" in done.stdout  # the default ensemble predicts
    # The feature tricks add embeddings and CNNs: more parameters than the baseline.
    assert rich["parameters"] > base["parameters"]
    for r in (base, rich):
        assert r["train_titles_per_s"] > 0 and r["predict_titles_per_s"] > 0
        assert r["peak_rss_mib"] > 0
    assert [r["trick"] for r in results[:4]] == ["baseline", "gpkg+pinyin_glyph", "baseline@HEAD",
                                                 "gpkg+pinyin_glyph@HEAD"]
    assert results[4]["features"]["titles"] == 50
    assert "baseline train: collation" in done.stdout and "baseline predict: encoding" in done.stdout
    shares = base["profile"]["train"]
    assert set(shares) >= {"embeddings", "encoder", "head projection", "span scores", "loss",
                           "backward", "optimizer"} and all(v >= 0 for v in shares.values())


def test_benchmark_times_saved_models_and_ensembles_without_training(tmp_path):
    from jd_ner.datasets import save_model
    from jd_ner.modeling.ensemble import EnsembleModel

    from .test_ensemble import two_members

    first, second = two_members()
    first.spec.threshold = -1.0
    save_model(first, tmp_path / "single")
    save_model(EnsembleModel([first, second], threshold=-0.5), tmp_path / "ensemble")
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"),
           "--predict-file", str(RAW / "synthetic_test.txt"), "--predict-titles", "24",
           "--threads", "1", "--models", f"{tmp_path / 'single'},{tmp_path / 'ensemble'}",
           "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single, ensemble = json.loads(out.read_text())
    assert [r["members"] for r in (single, ensemble)] == [1, 2]
    assert [r["threshold"] for r in (single, ensemble)] == [-1.0, -0.5]
    assert ensemble["parameters"] == 2 * single["parameters"]
    for r in (single, ensemble):
        assert r["predict_titles"] == 24 and r["predict_titles_per_s"] > 0 and r["peak_rss_mib"] > 0
    rows = [line for line in done.stdout.splitlines() if "/single " in line or "/ensemble " in line]
    assert len(rows) == 2 and "predict t/s" in done.stdout
    refused = subprocess.run([*cmd[:-2], "--tricks", "gpkg"], capture_output=True, text=True,
                             cwd=ROOT, timeout=300)
    assert refused.returncode != 0 and "--tricks would be ignored" in refused.stderr
