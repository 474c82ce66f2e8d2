"""Every notebook under notebooks/ runs top to bottom in smoke mode (LTM_SMOKE=1) without error.

Smoke mode is the notebook's own small setting (a few training steps of tiny models); the full mode
(LTM_SMOKE=0, `pytest -m slow`) is the run each notebook documents. Notebooks that prepare the
embedded corpus share one data cache per session (LTM_CACHE), so its tokenizer is trained once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "python3"
CELL_TIMEOUT_S = 300  # per cell; a smoke run of a whole notebook takes well under a minute

# Cells tagged with one of these must leave this text in their outputs (the notebook's key result).
TAGGED_OUTPUTS = {
    "heldout-table": "-ELBO (bound)",  # 01, 02, 04: held-out numbers labelled as a bound
    "elbo-is-ce": "summed CE",  # 04: the degenerate families' ELBO against their cross-entropy
    "conditional-table": "prompt NLL given z",  # 03: what the thoughts change in the samples
}
# The notebooks the project documents, and the tagged cells each must hold.
EXPECTED = {
    "01_priors_and_guides.ipynb": {"heldout-table"},
    "02_inference_time_compute.ipynb": {"heldout-table"},
    "03_sampling_from_posteriors.ipynb": {"conditional-table"},
    "04_pondering_as_degenerate_priors.ipynb": {"elbo-is-ce", "heldout-table"},
}


def _require_runner():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install ltm[dev])")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install ltm[dev])")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install ltm[dev])")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.skip(f"no Jupyter kernel named '{KERNEL}'; install one with "
                    f"`python -m ipykernel install --user --name {KERNEL}`")
    return nbformat, nbclient


def _output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append(out["text"])
        parts.append(out.get("data", {}).get("text/plain", ""))
        parts.append(out.get("data", {}).get("text/markdown", ""))
    return "".join(parts)


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found under {NOTEBOOK_DIR}"
    missing = sorted(set(EXPECTED) - {p.name for p in NOTEBOOKS})
    assert not missing, f"notebooks missing under {NOTEBOOK_DIR}: {missing}"


def _tags(nb) -> set[str]:
    return {tag for cell in nb.cells for tag in cell.get("metadata", {}).get("tags", [])}


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One token cache for every notebook of the session (the embedded corpus's BPE, trained once)."""
    return tmp_path_factory.mktemp("ltm-cache")


def _run(path: Path, smoke: bool, cache: Path) -> float:
    """Execute the notebook in smoke or full mode; check its tagged outputs; return the seconds."""
    nbformat, nbclient = _require_runner()
    nb = nbformat.read(path, as_version=4)
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        f"{path.name} is committed with outputs; clear them before committing.")
    lost = EXPECTED.get(path.name, set()) - _tags(nb)
    assert not lost, f"{path.name} lost its tagged cells {sorted(lost)} (see TAGGED_OUTPUTS)."
    env = {**os.environ, "LTM_SMOKE": "1" if smoke else "0", "HF_HUB_OFFLINE": "1", "LTM_CACHE": str(cache)}
    env.pop("LTM_CHECKPOINT", None)  # 03 would sample a user's run instead of training its own
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S if smoke else 1800,
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError, naming the cell, on the first failure
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        for tag, expected in TAGGED_OUTPUTS.items():
            if tag in cell.get("metadata", {}).get("tags", []):
                assert expected in _output_text(cell), (
                    f"{path.name}: the cell tagged '{tag}' did not print '{expected}'.")
    return seconds


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path: Path, data_cache: Path):
    print(f"{path.name}: smoke run {_run(path, smoke=True, cache=data_cache):.1f} s")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_full_mode(path: Path, data_cache: Path):
    """The run the notebook documents, top to bottom (minutes; `pytest -m slow`)."""
    print(f"{path.name}: full run {_run(path, smoke=False, cache=data_cache):.1f} s")
