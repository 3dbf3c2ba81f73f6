"""MLflow logging that is a no-op outside an active run (tests, notebooks, scripts)."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    mlflow = sys.modules.get("mlflow")  # never imported: no run can be active (or installed)
    if mlflow is None or mlflow.active_run() is None:
        return
    finite = {k: float(v) for k, v in metrics.items()
              if isinstance(v, (int, float)) and math.isfinite(float(v))}
    if finite:
        mlflow.log_metrics(finite, step=step)
