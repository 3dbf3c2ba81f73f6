"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """``ingest``, ``features``, ``train``, ``evaluate``, ``submit`` and ``__default__`` (all).

    ``train`` includes ingest and features, so ``kedro run --pipeline=train`` always
    trains on the current ``train_file`` (a few seconds of parsing and encoding).
    Kedro loads only the pipelines a command asks for, so those two are imported here.
    """
    pipelines = find_pipelines(raise_errors=True)
    if "__default__" in pipelines:
        pipelines["__default__"] = sum(pipelines.values())
    if "train" in pipelines:
        from jd_ner.pipelines import features, ingest

        pipelines["train"] = ingest.create_pipeline() + features.create_pipeline() + pipelines["train"]
    return pipelines
