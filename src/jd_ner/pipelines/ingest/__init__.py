"""The ingest pipeline.

``create_pipeline`` is imported on first use, so the node functions import without Kedro
(``scripts/compare_tricks.py`` runs them on machines that have only the modelling stack).
"""


def __getattr__(name: str):
    if name == "create_pipeline":
        from .pipeline import create_pipeline

        return create_pipeline
    raise AttributeError(name)
