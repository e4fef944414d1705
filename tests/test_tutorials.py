"""The stored tutorials are executed notebooks and still run top to bottom (on small settings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

# every tutorial run top to bottom: minutes each, so behind the `slow` marker (CI runs them: `pytest -m slow`)
pytestmark = pytest.mark.slow

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


def _generator():
    spec = importlib.util.spec_from_file_location("make_tutorials", TUTORIALS / "make_tutorials.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "name",
    [
        "one_model_every_scale.ipynb",
        "her2st_end_to_end.ipynb",
        "her2st_hne_only_slides.ipynb",
        "her2st_coarse_labels.ipynb",
    ],
)
def test_tutorial_is_stored_executed_and_still_runs(name, monkeypatch, request):
    if name.startswith("her2st"):
        monkeypatch.setenv("STPREDICT_HER2ST_DIR", str(request.getfixturevalue("her2st_dir")))
    stored = nbformat.read(TUTORIALS / name, as_version=4)
    code = [c for c in stored.cells if c.cell_type == "code"]
    # stored with the outputs of the full run, and in sync with the generator's cells
    assert all(c.get("execution_count") for c in code)
    assert any(o.get("output_type") == "display_data" for c in code for o in c.get("outputs", []))
    expected = _generator().build(_generator().NOTEBOOKS[name])
    assert [c.source for c in stored.cells] == [c.source for c in expected.cells]
    # re-run from scratch on small settings; any failing cell raises CellExecutionError
    monkeypatch.setenv("STPREDICT_TUTORIAL_FAST", "1")
    for c in code:
        c.outputs, c.execution_count = [], None
    client = nbclient.NotebookClient(
        stored, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}
    )
    client.execute()
    assert all(c.execution_count for c in stored.cells if c.cell_type == "code")
