"""notebooks/error_analysis.ipynb runs headless on a tiny project's evaluation outputs."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from .conftest import ROOT, _end_mlflow_runs
from .test_pipeline_run import TINY_RUN, newest

NOTEBOOK = ROOT / "notebooks" / "error_analysis.ipynb"


def test_error_analysis_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code[0].source == "%load_ext kedro.ipython"
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def outputs(notebook, output_type: str) -> list:
    return [output for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.outputs if output.output_type == output_type]


@pytest.mark.slow
def test_error_analysis_notebook_runs_on_the_newest_evaluation(project, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.chdir(project)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=TINY_RUN) as session:
        session.run()
    _end_mlflow_runs()
    (project / "notebooks").mkdir()
    shutil.copy(NOTEBOOK, project / "notebooks")
    # a kernel spec of this interpreter, whatever kernels the machine has registered
    spec = tmp_path / "jupyter" / "kernels" / "jd_ner_test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jd_ner test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    notebook = nbformat.read(project / "notebooks" / NOTEBOOK.name, as_version=4)
    # as Jupyter runs it: from the notebook's folder, the project found above it
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="jd_ner_test",
                            resources={"metadata": {"path": str(project / "notebooks")}}).execute()

    assert not outputs(notebook, "error")  # execute() raises on one; belt and braces
    stdout = "".join(o.text for o in outputs(notebook, "stream") if o.name == "stdout")
    data = project / "data"
    summary = json.loads(newest(data / "08_reporting", "evaluation_summary.json").read_text())
    low, high = summary["test"]["f1_95"]
    assert f"test F1 {summary['test']['f1']:.4f} (95% {low:.4f}-{high:.4f})" in stdout
    version = newest(data / "06_models", "ner_model").parent.name
    assert f"outputs of the run {version} · model {version}" in stdout
    assert "different runs" not in stdout
    shown = outputs(notebook, "display_data") + outputs(notebook, "execute_result")
    assert len([o for o in shown if "image/png" in o.data]) == 4  # the four plots
    for name in ("learning_curve.png", "per_type_f1.png", "error_classes.png",
                 "confusion_matrix.png"):
        assert any(f"data/08_reporting/{name}/{version}/{name}" in o.data.get("text/markdown", "")
                   for o in shown), name
    tables = [o.data["text/html"] for o in shown if "<table" in o.data.get("text/html", "")]
    import pandas as pd

    errors = pd.read_csv(newest(data / "08_reporting", "errors.csv"))
    test_errors = errors[errors["split"] == "test"]
    assert f"{len(test_errors)} test errors in {test_errors['title_id'].nunique()} titles" in stdout
    confident = [t for t in tables if "pred_score" in t]
    assert len(confident) == 1
    top = test_errors.dropna(subset=["pred_score"]).nlargest(1, "pred_score").iloc[0]
    assert top["title"] in confident[0] and f"{top['pred_score']:.2f}" in confident[0]
    assert any(">missed<" in t for t in tables)  # the error classes and the missed entities
