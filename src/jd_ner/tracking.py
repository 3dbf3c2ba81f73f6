"""MLflow logging that is a no-op outside an active run (tests, notebooks)."""

from __future__ import annotations

import math
from collections.abc import Mapping


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    finite = {k: float(v) for k, v in metrics.items()
              if isinstance(v, (int, float)) and math.isfinite(float(v))}
    if finite:
        mlflow.log_metrics(finite, step=step)
