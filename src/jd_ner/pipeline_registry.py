"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

ONCE = ("pretrain", "pseudo_label", "distill")  # not part of __default__
ORDER = ("__default__", "ingest", "features", "pretrain", "train", "evaluate", "submit",
         "pseudo_label", "distill")


def register_pipelines() -> dict[str, Pipeline]:
    """``ingest``, ``features``, ``train``, ``evaluate``, ``submit``, ``__default__`` (those
    five), and ``pretrain`` and ``pseudo_label``: run when asked, their outputs (a
    pretrained encoder, pseudo-labelled titles) reused by later training runs; and
    ``distill``: k-fold teachers and a student trained on their soft targets, instead of
    ``train`` (it includes ingest, features, pretraining, evaluate and submit).

    ``train`` includes ingest, features and the pretraining step (the other two include
    ingest), so ``kedro run --pipelines=train`` always trains on the current ``train_file``
    (a few seconds of parsing and encoding) and starts from an encoder pretrained for it:
    the newest one when it matches (same titles and settings), else one pretrained now.
    Kedro loads only the pipelines a command asks for, so those they include are
    imported here.
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines = _tag_by_home(pipelines)
    from jd_ner.pipelines import evaluate, features, ingest, submit
    from jd_ner.pipelines.pretrain.pipeline import training_encoder_pipeline

    home = _tag_by_home({"ingest": ingest.create_pipeline(), "features": features.create_pipeline(),
                         "pretrain": training_encoder_pipeline(),
                         "evaluate": evaluate.create_pipeline(), "submit": submit.create_pipeline()})
    if "train" in pipelines:
        pipelines["train"] = (home["ingest"] + home["features"] + home["pretrain"]
                              + pipelines["train"])
    if "distill" in pipelines:
        pipelines["distill"] = (home["features"] + home["pretrain"] + pipelines["distill"]
                                + home["evaluate"] + home["submit"])
    for name in ONCE:
        if name in pipelines:
            pipelines[name] = home["ingest"] + pipelines[name]
    pipelines["__default__"] = sum((p for name, p in pipelines.items()
                                    if name not in ONCE and name != "__default__"), Pipeline([]))
    # in the order they run, so `kedro registry list` and kedro viz list them that way
    return {name: pipelines[name] for name in ORDER if name in pipelines} | pipelines


# the pipeline a node belongs to, for a node in several (the first here wins)
HOMES = ("ingest", "features", "train", "evaluate", "submit", "pretrain", "pseudo_label",
         "distill")


def _tag_by_home(pipelines: dict[str, Pipeline]) -> dict[str, Pipeline]:
    """Each node tagged with the pipeline it belongs to (kedro viz filters and groups by
    tag; ``kedro run --tags=evaluate`` works too), the same tag wherever it is reused."""
    home: dict[str, str] = {}
    for name in HOMES:
        for node in pipelines.get(name, Pipeline([])).nodes:
            home.setdefault(node.name, name)
    return {name: Pipeline([n.tag(home.get(n.name, name)) for n in pipe.nodes])
            for name, pipe in pipelines.items()}
