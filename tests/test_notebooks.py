"""Execute every notebook in ``notebooks/`` top to bottom on the offline default model.

Each notebook runs in a fresh kernel of the *current* interpreter (so the project's virtual
environment is used whatever kernelspecs are installed), with ``notebooks/`` as the working
directory. A failing cell fails the test with that cell's source and error. All six take about ten minutes
on two CPU cores; ``MECHVALUE_SKIP_NOTEBOOKS=1`` skips them.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def _kernel_manager():
    """A kernel manager that starts ``sys.executable -m ipykernel_launcher`` (no kernelspec lookup)."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    class CurrentInterpreterKernel(AsyncKernelManager):
        @property
        def kernel_spec(self):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name=f"Python ({sys.executable})", language="python")

    return CurrentInterpreterKernel


def run_notebook(path: Path, *, timeout: int = CELL_TIMEOUT_S, save_to: Path | None = None) -> float:
    """Execute ``path`` (in memory) and return the wall time in seconds; raises on a failing cell.

    ``save_to``: a folder to write the executed copy to (for reading the outputs), never the notebook itself.
    """
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # oversubscription makes small-model CPU runs slower
    env["PYTHONUNBUFFERED"] = "1"
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_manager_class=_kernel_manager(),
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute(env=env, cwd=str(path.parent))
    except CellExecutionError as exc:
        failing = next((c for c in nb.cells if c.get("cell_type") == "code" and any(
            o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        where = f"cell {nb.cells.index(failing)}:\n{failing.source}\n" if failing is not None else ""
        error = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # drop the traceback's ANSI colours
        pytest.fail(f"{path.name} failed at {where}\n{error}", pytrace=False)
    finally:
        if save_to is not None:
            Path(save_to).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(save_to) / path.name)
    return time.perf_counter() - start


def test_notebooks_present():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOKS_DIR}"
    listed = (NOTEBOOKS_DIR / "README.md").read_text()
    missing = [p.name for p in NOTEBOOKS if p.name not in listed]
    assert not missing, f"notebooks/README.md does not list {missing}"


def test_notebooks_stored_without_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [k for k, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them before committing"


@pytest.mark.model
@pytest.mark.skipif(os.environ.get("MECHVALUE_SKIP_NOTEBOOKS") == "1", reason="MECHVALUE_SKIP_NOTEBOOKS=1")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path):
    elapsed = run_notebook(path)
    print(f"{path.name}: {elapsed:.0f} s")


def clear_outputs(path: Path) -> None:
    """Strip outputs, execution counts and execution metadata from a notebook, in place."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)


if __name__ == "__main__":
    # time the notebooks: python tests/test_notebooks.py [--save DIR] [name fragments...]
    # strip outputs before committing: python tests/test_notebooks.py --clear
    args = sys.argv[1:]
    if args[:1] == ["--clear"]:
        for p in NOTEBOOKS:
            clear_outputs(p)
        sys.exit(0)
    save = None
    if args[:1] == ["--save"]:
        save, args = Path(args[1]), args[2:]
    for p in NOTEBOOKS:
        if not args or any(w in p.name for w in args):
            print(f"{p.name}: {run_notebook(p, save_to=save):.0f} s", flush=True)
