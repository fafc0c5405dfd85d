"""The notebooks run top to bottom on a small workspace, with their parameters injected."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
NAMES = ["survival_associations.ipynb", "similar_patients.ipynb", "growth_forecast.ipynb"]


def execute(path: Path, parameters: dict, cwd: Path) -> nbformat.NotebookNode:
    """Run a notebook with the cell tagged ``parameters`` replaced by ``parameters``."""
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    tagged[0].source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_survival_associations_runs(discovered, tmp_path):
    nb = execute(NOTEBOOKS / "survival_associations.ipynb",
                 {"workspace": str(discovered.root), "top": 5}, tmp_path)
    text = outputs_text(nb)
    assert "biomarkers tested:" in text
    assert "proportional-hazards check" in text
    images = [o for c in nb.cells for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the Kaplan-Meier plot and the forest plot


def test_similar_patients_runs(discovered, tmp_path):
    from discovery import load_results

    risk = load_results(discovered).risk
    patient = sorted(risk["patient_id"])[0]
    nb = execute(NOTEBOOKS / "similar_patients.ipynb",
                 {"workspace": str(discovered.root), "patient_id": patient, "k": 5}, tmp_path)
    text = outputs_text(nb)
    assert f"patients most similar to {patient}" in text
    assert "log-rank p" in text


def test_growth_forecast_runs(discovered, tmp_path):
    from discovery import load_results

    tracks = load_results(discovered).tracks
    days = tracks.groupby("patient_id")["day"].nunique()
    patient = sorted(days.index[days >= 2])[0]
    nb = execute(NOTEBOOKS / "growth_forecast.ipynb",
                 {"workspace": str(discovered.root), "patient_id": patient,
                  "methods": ["carry_forward", "own_trend", "similarity"]}, tmp_path)
    text = outputs_text(nb)
    assert "backtest:" in text and "held-out patients" in text
    assert "coverage per horizon bucket (nominal 0.8)" in text
    assert f"patient {patient} at day" in text and "category" in text
    images = [o for c in nb.cells for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    # one predicted-vs-measured plot per method, error by horizon, calibration, the patient
    assert len(images) == 3 + 3
