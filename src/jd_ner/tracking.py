"""MLflow logging that is a no-op outside an active run (tests, notebooks, scripts).

Names: per-epoch curves under ``epoch/`` (``pretrain/`` for pretraining), so MLflow's chart
page shows them as one section of curves; the selected model's numbers under the plain
names a user reads first in the run table (``dev_f1``, ``test_f1`` ...); one-off counts
(best epoch, minutes, parameter counts) as tags, which the charts page does not draw.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    mlflow = sys.modules.get("mlflow")  # never imported: no run can be active (or installed)
    if mlflow is None or mlflow.active_run() is None:
        return
    finite = {k: float(v) for k, v in metrics.items()
              if isinstance(v, (int, float)) and math.isfinite(float(v))}
    if finite:
        mlflow.log_metrics(finite, step=step)


def log_tags(tags: Mapping[str, object]) -> None:
    mlflow = sys.modules.get("mlflow")
    if mlflow is None or mlflow.active_run() is None:
        return
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_epoch(record: Mapping[str, float], prefix: str = "epoch/") -> None:
    """One epoch's record as points of the ``prefix`` curves, at its epoch."""
    log_metrics({f"{prefix}{k}": v for k, v in record.items() if k != "epoch"},
                step=int(record["epoch"]))


def active_run_reference() -> dict | None:
    """Where another process (a distributed training rank) can log to this process's
    active MLflow run: tracking URI and run id; None without one."""
    mlflow = sys.modules.get("mlflow")
    run = mlflow.active_run() if mlflow is not None else None
    if run is None:
        return None
    return {"uri": mlflow.get_tracking_uri(), "run_id": run.info.run_id}


def run_logger(reference: dict | None, prefix: str = "epoch/"):
    """``on_epoch_end`` for a process that logs to the run ``reference`` names (no-op
    without one): each record's finite numbers, at its epoch, as :func:`log_epoch` does."""
    if reference is None:
        return None
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(reference["uri"])

    def log(record: Mapping[str, float]) -> None:
        import time

        now = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}{k}", float(v), now, int(record["epoch"]))
                   for k, v in record.items() if k != "epoch"
                   and isinstance(v, (int, float)) and math.isfinite(float(v))]
        client.log_batch(reference["run_id"], metrics=metrics)

    return log


@contextmanager
def child_run(name: str, tags: Mapping[str, object]) -> Iterator[str | None]:
    """A nested MLflow run inside the active one (its parent link is MLflow's own
    ``mlflow.parentRunId`` tag), active until the block ends; yields its id, or None (and
    does nothing) without an active run."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None or mlflow.active_run() is None:
        yield None
        return
    with mlflow.start_run(run_name=name, nested=True,
                          tags={k: str(v) for k, v in tags.items()}) as run:
        yield run.info.run_id
