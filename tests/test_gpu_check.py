"""The GPU check script runs on the CPU (dry run): both models, two precisions, its table."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_cpu():
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"),
           "--train-file", str(ROOT / "data" / "01_raw" / "synthetic_train.txt"),
           "--device", "cpu", "--steps", "3", "--batch-size", "8", "--predict-titles", "16",
           "--precisions", "fp32,bf16", "--ddp",
           "--set", "train.model.encoder.hidden_size=32", "--set", "train.model.encoder.lstm_hidden=16",
           "--set", "train.model.encoder.bigram_dim=16", "--set", "train.model.head.head_size=8"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin",
                               "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if " steps  loss " in line]
    assert [row.split()[:3] for row in rows] == [["default", "fp32", "3"], ["default", "bf16", "3"],
                                                 ["pretrained", "fp32", "3"],
                                                 ["pretrained", "bf16", "3"]]
    assert all("finite" in row and "NOT FINITE" not in row for row in rows)
    assert any(line.startswith("ddp (1 process") and line.endswith("-> agree")
               for line in done.stdout.splitlines()), done.stdout[-2000:]
    assert done.stdout.strip().endswith("GPU check passed")
