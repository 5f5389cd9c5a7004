"""Every notebook under notebooks/ runs top to bottom, headless, on a shortened demo run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
OUT_LINE = 'OUT = os.environ.get("PILA_DEMO_OUT", "../outputs/demo")'
FIGURES = {
    "router_statistics": [
        "router_statistics.png",
        "router_mean_weight.png",
        "router_selection_by_sigma.png",
        "router_generated.png",
    ],
    "expert_maps": [
        *(
            f"expert_maps_{c}.png"
            for c in (
                "rigid_body",
                "elastic",
                "fluid",
                "compressible_flow",
                "phase_change",
                "collision",
                "thermal",
                "optical",
            )
        ),
        "expert_update_by_category.png",
    ],
    "residual_curves": [
        "residual_curves_stageC.png",
        "residual_matrix_stageC.png",
        "residual_curves_stageB.png",
        "expert_curves_stageC.png",
        "stage_losses.png",
        "grad_ratio.png",
    ],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_the_notebooks_are_the_expected_ones_and_stored_without_outputs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(FIGURES)
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), (
            f"{path.name} has outputs"
        )
        # the output folder is one variable, set in the first code cell and nowhere else
        assert OUT_LINE in code[0].source
        assert not any("outputs/demo" in c.source for c in code[1:])
        assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs_on_a_demo_run(name, tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "demo"
    shutil.copytree(tiny_run, out)
    monkeypatch.setenv("PILA_DEMO_OUT", str(out))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))  # connection files
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend emits image/png
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)\nprint(OUT)"))
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell

    executable, out_seen = nb.cells[-1].outputs[0]["text"].split()
    # the kernel is this interpreter (the virtualenv's python), and it read the overridden folder
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert executable.startswith(sys.prefix)
    assert Path(out_seen) == out
    images = sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert images == len(FIGURES[name])  # each figure shown once, and each saved:
    for figure in FIGURES[name]:
        path = out / "figures" / figure
        assert path.is_file(), f"{name} did not write {figure}"
        assert path.read_bytes()[:8] == PNG_MAGIC
