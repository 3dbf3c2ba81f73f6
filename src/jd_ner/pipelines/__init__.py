"""The project's pipelines, one package each: ``nodes.py`` (pure functions) and
``pipeline.py`` (wiring, with Kedro)."""

import importlib


def lazy_create_pipeline(package: str):
    """A module ``__getattr__`` that imports ``create_pipeline`` from ``<package>.pipeline`` on
    first use, so that ``<package>.nodes`` imports without Kedro (``scripts/compare_tricks.py``
    runs the nodes on machines that have only the modelling stack)."""

    def __getattr__(name: str):
        if name == "create_pipeline":
            return importlib.import_module(f"{package}.pipeline").create_pipeline
        raise AttributeError(name)

    return __getattr__
