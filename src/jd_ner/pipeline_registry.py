"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

ONCE = ("pretrain", "pseudo_label")  # not part of __default__


def register_pipelines() -> dict[str, Pipeline]:
    """``ingest``, ``features``, ``train``, ``evaluate``, ``submit``, ``__default__`` (those
    five), and ``pretrain`` and ``pseudo_label``: run when asked, their outputs (a
    pretrained encoder, pseudo-labelled titles) reused by later training runs.

    ``train`` includes ingest and features (the other two include ingest), so ``kedro run
    --pipelines=train`` always trains on the current ``train_file`` (a few seconds of
    parsing and encoding).
    Kedro loads only the pipelines a command asks for, so those two are imported here.
    """
    pipelines = find_pipelines(raise_errors=True)
    if "__default__" in pipelines:
        pipelines["__default__"] = sum(p for name, p in pipelines.items() if name not in ONCE)
    from jd_ner.pipelines import features, ingest

    if "train" in pipelines:
        pipelines["train"] = ingest.create_pipeline() + features.create_pipeline() + pipelines["train"]
    for name in ONCE:
        if name in pipelines:
            pipelines[name] = ingest.create_pipeline() + pipelines[name]
    return pipelines
