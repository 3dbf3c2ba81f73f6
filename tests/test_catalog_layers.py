"""Every catalog entry sits in one of kedro viz's layers, and keeps its other metadata."""

from __future__ import annotations

import re

import pytest

from .conftest import ROOT

# kedro viz's layer view, in data-flow order: one layer per data/0N_ folder
LAYERS = {"01_raw": "raw", "02_intermediate": "intermediate", "03_primary": "primary",
          "04_feature": "feature", "05_model_input": "model_input", "06_models": "models",
          "07_model_output": "model_output", "08_reporting": "reporting"}
# a dataset made from a later layer's data belongs to that layer and its folder: kedro viz
# shows no layers at all once they form a cycle (e.g. intermediate -> primary -> intermediate)
NOT_THEIR_FOLDER: dict[str, str] = {}


@pytest.fixture(scope="module")
def catalog_config() -> dict:
    """conf/base/catalog.yml as `kedro run` resolves it (templates starting with _ dropped)."""
    from kedro.config import OmegaConfigLoader

    config = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="base")["catalog"]
    return {name: entry for name, entry in config.items() if not name.startswith("_")}


def test_every_catalog_entry_has_the_layer_of_its_data_folder(catalog_config):
    assert len(catalog_config) > 30
    for name, entry in catalog_config.items():
        layer = ((entry.get("metadata") or {}).get("kedro-viz") or {}).get("layer")
        assert layer in LAYERS.values(), (name, entry.get("metadata"))
        path = str(entry.get("filepath") or entry.get("filepaths") or entry.get("path") or "")
        folder = re.search(r"data/(0\d_[a-z_]+)/", path)
        if folder:
            assert layer == NOT_THEIR_FOLDER.get(name, LAYERS[folder.group(1)]), (name, path, layer)
        else:  # only what stays in memory has no data folder
            assert entry["type"] == "MemoryDataset", (name, entry)


def test_kedro_viz_reads_the_layers_and_the_hook_still_sees_mlflow_artifact(catalog_config):
    from kedro.io import DataCatalog
    from kedro_viz.data_access.repositories.catalog import CatalogRepository

    catalog = DataCatalog.from_config(catalog_config)
    factory_names = ("train_model_input", "test_predictions", "test_metrics", "dev_per_type")
    for name in factory_names:  # kedro viz resolves the pipelines' factory datasets first, too
        assert catalog.get(name) is not None
    repository = CatalogRepository()
    repository.set_catalog(catalog)
    assert {name: repository.get_layer_for_dataset(name)
            for name in ("raw_train", "labelled_titles", "train_titles", "char_vocab",
                         *factory_names, "ner_model", "untrained_model", "submission")} == {
        "raw_train": "raw", "labelled_titles": "intermediate", "train_titles": "primary",
        "char_vocab": "feature", "train_model_input": "model_input",
        "test_predictions": "model_output", "test_metrics": "reporting",
        "dev_per_type": "reporting", "ner_model": "models", "untrained_model": "models",
        "submission": "model_output"}
    # the test hooks.MlflowArtifactsHook.after_dataset_saved applies to a saved dataset
    logged = {name for name in catalog.keys()
              if (getattr(catalog.get(name), "metadata", None) or {}).get("mlflow_artifact")}
    assert {"ingest_report", "training_config", "ner_model", "training_history", "test_metrics",
            "dev_per_type", "evaluation_summary", "learning_curve_plot", "evaluation_errors",
            "submission"} <= logged
    assert not {"raw_train", "train_titles", "char_vocab", "test_predictions",
                "untrained_model"} & logged


def test_kedro_viz_orders_the_layers_of_every_pipeline(project, monkeypatch):
    """kedro viz drops the layer view of a pipeline whose layers depend on each other in a
    cycle; the default pipeline's layers follow the data folders."""
    from kedro_viz.data_access.managers import DataAccessManager
    from kedro_viz.integrations.kedro import data_loader
    from kedro_viz.server import populate_data

    monkeypatch.chdir(project)
    catalog, pipelines, _ = data_loader.load_data(project)  # what `kedro viz run` loads
    manager = DataAccessManager()
    populate_data(manager, catalog, pipelines, {})
    layers = {name: manager.get_sorted_layers_for_registered_pipeline(name) for name in pipelines}
    assert layers["__default__"] == list(LAYERS.values())
    assert {name for name, found in layers.items() if not found} == set()
