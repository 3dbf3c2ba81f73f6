"""Project hooks: what a run shows in MLflow and in the terminal.

kedro-mlflow opens one MLflow run per ``kedro run`` and logs the raw parameters. Its
artifact dataset wrapper does not work around versioned datasets, so files are logged
here instead: every catalog entry with ``metadata: {mlflow_artifact: true}`` is logged
once it is saved, from the versioned path it was saved to. The run is named after what it
did (``train · mixup · <model version>``, ``evaluate · <model version>``) and tagged with the
model version it made or used; an evaluate or submit run is linked to the run that trained
its model, and that run to them. The terminal gets one line per node and, at the end, a
short summary: model, F1, where the submission and reports are, the MLflow run.
"""

from __future__ import annotations

import json
import logging
import re
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


def _version(dataset, saved: bool) -> str | None:
    try:
        return dataset.resolve_save_version() if saved else dataset.resolve_load_version()
    except Exception:  # noqa: BLE001 - an unversioned or missing dataset has none
        return None


class MlflowArtifactsHook:
    def __init__(self) -> None:
        self._catalog = None
        self._reset()

    def _reset(self) -> None:
        self._pipelines: list[str] = []
        self._nodes, self._done = 0, 0
        self._trick: str | None = None
        self._model: tuple[str, bool] | None = None  # (version, trained in this run)
        self._summary: dict | None = None
        self._saved: dict[str, Path] = {}
        self._tagged = False
        self._runner = "SequentialRunner"

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline) -> None:
        self._reset()
        self._pipelines = list(run_params.get("pipeline_names") or []) or ["__default__"]
        runner = run_params.get("runner") or "SequentialRunner"
        # kedro-mlflow tags the runner object's repr ("<... object at 0x...>"): its class
        self._runner = runner if isinstance(runner, str) else type(runner).__name__
        self._runner = self._runner.rsplit(".", 1)[-1].split(" ")[0].lstrip("<")
        self._nodes = len(pipeline.nodes)

    @hook_impl
    def before_node_run(self, node) -> None:
        self._done += 1
        logger.info("[%d/%d] %s", self._done, self._nodes, node.name)
        if not self._tagged and _active_run():
            self._tagged = True
            self._name_run()
            _describe_experiment()

    def _name_run(self) -> None:
        """``<pipelines> · <trick> · <model version>``, as far as known so far."""
        import mlflow

        label = "+".join("run" if p == "__default__" else p for p in self._pipelines)
        parts = [label, self._trick, self._model[0] if self._model else None]
        mlflow.set_tags({"mlflow.runName": " · ".join(p for p in parts if p),
                         "pipelines": label, "runner": self._runner})

    def _model_seen(self, version: str | None, trained: bool) -> None:
        if version is None or not _active_run() or self._model is not None:
            return
        import mlflow

        self._model = (version, trained)
        mlflow.set_tag("model.version", version)
        if trained:
            mlflow.set_tag("model.role", "trained here")
        else:
            _link_to_training_run(version, "+".join(self._pipelines))
        self._name_run()

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data) -> None:
        if dataset_name == "ner_model" and self._catalog is not None:
            self._model_seen(_version(self._catalog.get(dataset_name), saved=False), False)

    @hook_impl
    def after_node_run(self, node, outputs: dict) -> None:
        if "evaluation_summary" in outputs:
            self._summary = outputs["evaluation_summary"]
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
            self._trick = config["trick"]
            self._name_run()

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data, node) -> None:
        if self._catalog is None:
            return
        dataset = self._catalog.get(dataset_name)
        path = saved_path(dataset)
        if path is not None:
            self._saved[dataset_name] = path
        if dataset_name == "ner_model":
            self._model_seen(_version(dataset, saved=True), True)
        if not _active_run() or not (getattr(dataset, "metadata", None) or {}).get("mlflow_artifact"):
            return
        if path is None or not Path(path).exists():
            logger.warning("cannot log %s to MLflow: no saved file found", dataset_name)
            return
        import mlflow

        folder = f"{dataset_name}"
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path=folder)
        else:
            mlflow.log_artifact(str(path), artifact_path=folder)

    @hook_impl
    def after_pipeline_run(self) -> None:
        for line in run_summary(self._model, self._summary, self._saved, _run_id()):
            logger.info("%s", line)


def _run_id() -> tuple[str, str] | None:
    import mlflow

    run = mlflow.active_run()
    return (run.info.experiment_id, run.info.run_id) if run is not None else None


def run_summary(model: tuple[str, bool] | None, summary: dict | None,
                saved: dict[str, Path], run: tuple[str, str] | None) -> list[str]:
    """The lines that end a run: model, F1, where things were written, the MLflow run."""
    lines = []
    if model is not None:
        lines.append(f"model {model[0]} ({'trained in this run' if model[1] else 'loaded'})")
    if summary is not None:
        test, dev = summary.get("test") or {}, summary.get("dev") or {}
        if summary.get("note"):
            lines.append(summary["note"])
        elif "f1" in test:
            low, high = test["f1_95"]
            lines.append(f"test F1 {test['f1']:.4f} (95% {low:.4f}-{high:.4f}; P "
                         f"{test['precision']:.3f}, R {test['recall']:.3f})"
                         + (f" · dev F1 {dev['f1']:.4f} (selected the epoch)" if "f1" in dev else ""))
    teachers = saved.get("distill_teachers_report")
    if teachers is not None and Path(teachers).is_file():  # a distill run: its teachers too
        report = json.loads(Path(teachers).read_text(encoding="utf-8"))
        folds = [t["fold_f1"] for t in report["teachers"]]
        lines.append(f"teachers: {report['folds']}, out-of-fold F1 {report['oof_f1']:.4f} "
                     f"(folds {min(folds):.4f}-{max(folds):.4f}); the model above is their student")
    if "submission" in saved:
        lines.append(f"submission: {saved['submission']}")
    reports = [p for p in saved.values() if "08_reporting" in p.parts]
    if reports:
        root = Path(*reports[0].parts[:reports[0].parts.index("08_reporting") + 1])
        names = ", ".join(sorted(p.name for p in reports if p.suffix == ".png"))
        lines.append(f"reports: {len(reports)} files under {root}/<name>/{reports[0].parent.name}/"
                     + (f" (plots: {names})" if names else ""))
    if run:
        # MLflow 3 opens experiments in its GenAI view unless the URL asks for the other one
        lines.append(f"MLflow run {run[1]}: `kedro mlflow ui`, then http://127.0.0.1:5000/#/"
                     f"experiments/{run[0]}/runs/{run[1]}?workflowType=machine_learning")
    return lines


def _describe_experiment() -> None:
    """Open the experiment in MLflow's model-training view, not the GenAI one (MLflow 3)."""
    import mlflow

    run = mlflow.active_run()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment(run.info.experiment_id)
    if experiment.tags.get("mlflow.experimentKind") != "custom_model_development":
        client.set_experiment_tag(run.info.experiment_id, "mlflow.experimentKind",
                                  "custom_model_development")


def _link_to_training_run(version: str, pipelines: str) -> None:
    """Tag this run with the run that trained model ``version``, and that run with this."""
    import mlflow

    run = mlflow.active_run()
    client = mlflow.MlflowClient()
    found = client.search_runs([run.info.experiment_id],
                               filter_string=f"tags.`model.version` = '{version}' and "
                                             "tags.`model.role` = 'trained here'",
                               max_results=1)
    if not found:
        mlflow.set_tag("model.training_run_id", "unknown (not trained in this experiment)")
        return
    trainer = found[0]
    mlflow.set_tags({"model.training_run_id": trainer.info.run_id,
                     "model.trick": trainer.data.tags.get("trick", "")})
    # MLflow tag names allow letters, digits and _-./ only
    client.set_tag(trainer.info.run_id, "used_by." + re.sub(r"[^\w./-]", "_", pipelines),
                   run.info.run_id)
