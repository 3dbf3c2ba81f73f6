"""Project hooks: artefacts and the resolved configuration into the active MLflow run.

kedro-mlflow opens one MLflow run per ``kedro run`` and logs the raw parameters. Its
artifact dataset wrapper does not work around versioned datasets, so files are logged
here instead: every catalog entry with ``metadata: {mlflow_artifact: true}`` is logged
once it is saved, from the versioned path it was saved to.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kedro.framework.hooks import hook_impl

from jd_ner.config import flatten
from jd_ner.datasets import saved_path

logger = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import version

    libs = ("torch", "transformers", "kedro", "kedro-mlflow", "mlflow", "numpy", "pandas")
    return {"python": platform.python_version(), **{f"lib.{n}": version(n) for n in libs}}


def _active_run() -> bool:
    import mlflow

    return mlflow.active_run() is not None


class MlflowArtifactsHook:
    def __init__(self) -> None:
        self._catalog = None

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    @hook_impl
    def after_node_run(self, node, outputs: dict) -> None:
        if not _active_run():
            return
        import mlflow

        report = outputs.get("ingest_report")
        if report is not None:  # which data this run saw
            mlflow.set_tags({"data.train_file": report["source"],
                             "data.train_sha256": report["source_sha256"],
                             "data.titles": report["titles_kept"]})
        config = outputs.get("training_config")
        if config is not None:  # the resolved settings, the seed among them
            params = {f"run.{k}": v for k, v in flatten(config).items()}
            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
            mlflow.set_tags({"trick": config["trick"], "seed": config["optim"]["seed"],
                             **library_versions()})

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data, node) -> None:
        if self._catalog is None or not _active_run():
            return
        dataset = self._catalog.get(dataset_name)
        if not (getattr(dataset, "metadata", None) or {}).get("mlflow_artifact"):
            return
        path = saved_path(dataset)
        if path is None or not Path(path).exists():
            logger.warning("cannot log %s to MLflow: no saved file found", dataset_name)
            return
        import mlflow

        folder = f"{dataset_name}"
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path=folder)
        else:
            mlflow.log_artifact(str(path), artifact_path=folder)
